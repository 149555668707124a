"""Empirical NTK of a (sparse) network: exact trace, kernel, top eigenvalues and PX's path bound.

The empirical NTK on N inputs with K outputs is ``Theta = J J^T`` (NK x NK), ``J`` the Jacobian
of the stacked outputs (row ``n*K + k``) with respect to the parameters of the *sparse* network.

Conventions, shared by every function here:

- **Masks**: a pruned weight is not a parameter of the sparse network. The network is evaluated
  with ``theta * mask`` and its Jacobian columns for pruned entries are excluded (they are
  exactly zero here, because we differentiate ``f(theta * mask)`` with respect to ``theta``).
- **Which parameters** (``params``): ``"prunable"`` (default) differentiates only the prunable
  weights (the masked ones; Conv/Linear weights when ``masks`` is None), which is the set PX's
  bound is about; ``"all"`` differentiates every parameter (BatchNorm affine, biases too), other
  parameters being held fixed in the ``"prunable"`` case.
- **BatchNorm** is in eval mode (running statistics) so that samples are independent and the
  buffers are never updated; the model's own train/eval flags are restored on exit.
- The model's weights and buffers are never modified (everything goes through
  ``torch.func.functional_call``).

``px_bound`` evaluates the bound
``Tr Theta <= sum_{n,k} A_nk B_k <= ||J_v^f||_F^2 ||J_theta^v||_F^2`` of docs/px.md §2
with the two PX copies (see its docstring for exactly what is computed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ..errors import PruningError
from ..masks import Masks
from ..methods.px.ntk_bound import ntk_trace_bound
from ..numerics import exact_float32

PARAM_SETS = ("prunable", "all")
EIGEN_METHODS = ("auto", "exact", "lanczos")
EXACT_MAX_ROWS = 4096  # "auto" uses eigvalsh of the explicit kernel up to this NK ...
EXACT_MAX_BYTES = 2**30  # ... and while the NK x P Jacobian fits in this many bytes

__all__ = [
    "EIGEN_METHODS",
    "PARAM_SETS",
    "ntk_matrix",
    "ntk_top_eigenvalues",
    "ntk_trace",
    "px_bound",
]


# ---------------------------------------------------------------------------------------------
# The sparse network as a function of its parameters
# ---------------------------------------------------------------------------------------------
@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Everything in eval mode and full float32 (no TF32 on CUDA) inside, each module's own
    flag restored on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with exact_float32():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


class _Sparse:
    """``f(theta) = model(x; theta * mask)`` with the differentiated parameters as a dict."""

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor] | None, params: str):
        if params not in PARAM_SETS:
            raise PruningError(f"params must be one of {PARAM_SETS}, got {params!r}")
        named = dict(model.named_parameters())
        masks = Masks.ones(model) if masks is None else Masks(masks)
        for name, m in masks.items():
            if name not in named:
                raise PruningError(f"mask for {name!r} but the model has no such parameter")
            if tuple(m.shape) != tuple(named[name].shape):
                raise PruningError(f"mask for {name!r} has shape {tuple(m.shape)}, parameter "
                                   f"has {tuple(named[name].shape)}")
        if params == "prunable":  # the masked weights: exactly the ones PX's bound is about
            wanted = set(masks)
        else:
            wanted = set(named)
        self.model = model
        self.masks = masks
        self.diff = {n: p.detach() for n, p in named.items() if n in wanted}
        self.keep = {n: masks[n].to(device=p.device, dtype=p.dtype)
                     for n, p in self.diff.items() if n in masks}
        fixed = {n: p.detach() for n, p in named.items() if n not in wanted}
        for n in list(fixed):
            if n in masks:
                fixed[n] = fixed[n] * masks[n].to(fixed[n].device, fixed[n].dtype)
        self.fixed = {**fixed, **{n: b for n, b in model.named_buffers()}}
        first = next(iter(named.values()))
        self.dtype, self.device = first.dtype, first.device
        self.num_params = sum(p.numel() for p in self.diff.values())

    def __call__(self, diff: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Outputs (N, K) of the sparse network for parameters ``diff``."""
        weights = {n: (p * self.keep[n] if n in self.keep else p) for n, p in diff.items()}
        out = functional_call(self.model, {**self.fixed, **weights}, (x,), strict=False)
        return out.reshape(out.shape[0], -1)

    def input(self, x: Tensor) -> Tensor:
        """``x`` on the model's device and in its dtype (a non-empty batch)."""
        if not isinstance(x, Tensor):
            raise PruningError(f"x must be a tensor batch, got {type(x).__name__}")
        if x.dim() < 2 or x.shape[0] < 1:
            raise PruningError(f"x must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
        return x.to(device=self.device, dtype=self.dtype)

    def jacobian_chunks(self, x: Tensor, chunk: int) -> Iterator[dict[str, Tensor]]:
        """Per-sample Jacobians ``{name: (c, K, *shape)}`` for successive chunks of c samples."""
        if chunk < 1:
            raise PruningError(f"chunk must be >= 1, got {chunk}")

        def single(diff: Mapping[str, Tensor], xi: Tensor) -> Tensor:
            return self(diff, xi.unsqueeze(0))[0]

        per_sample = vmap(jacrev(single), in_dims=(None, 0))
        x = self.input(x)
        for i in range(0, x.shape[0], chunk):
            yield per_sample(self.diff, x[i:i + chunk])


def ntk_trace(
    model: nn.Module,
    x: Tensor,
    masks: Mapping[str, Tensor] | None = None,
    *,
    params: str = "prunable",
    chunk: int = 4,
) -> float:
    """Exact ``Tr Theta = sum_{n,k} ||d f_k(x_n) / d theta||^2`` of the sparse net (eval-mode BN).

    Per-sample Jacobians (``vmap`` of ``jacrev``) are formed ``chunk`` samples at a time, so the
    peak memory is ``chunk * K * P`` numbers, never the full NK x P Jacobian.
    """
    with _eval_mode(model):
        f = _Sparse(model, masks, params)
        total = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for jac in f.jacobian_chunks(x, chunk):
                for j in jac.values():
                    total += j.detach().to(torch.float64).square().sum().cpu()
        return float(total)


def _jacobian(f: _Sparse, x: Tensor, chunk: int) -> Tensor:
    """The NK x P Jacobian (rows ``n*K + k``, columns the differentiated parameters flattened)."""
    rows = []
    for jac in f.jacobian_chunks(x, chunk):
        c, k = next(iter(jac.values())).shape[:2]
        rows.append(torch.cat([j.detach().reshape(c * k, -1) for j in jac.values()], dim=1))
    return torch.cat(rows, dim=0)


def _gram(jac: Tensor, block: int = 1 << 14) -> Tensor:
    """``J J^T`` accumulated in float64 over column blocks (never a float64 copy of all of J)."""
    out = torch.zeros(jac.shape[0], jac.shape[0], dtype=torch.float64, device=jac.device)
    for i in range(0, jac.shape[1], block):
        part = jac[:, i:i + block].to(torch.float64)
        out += part @ part.T
    return out


def ntk_matrix(
    model: nn.Module,
    x: Tensor,
    masks: Mapping[str, Tensor] | None = None,
    *,
    params: str = "prunable",
    chunk: int = 4,
) -> Tensor:
    """The NK x NK empirical NTK ``J J^T`` (row/column ``n*K + k``), float64, from the Jacobian.

    Materialises the NK x P Jacobian in the model's dtype (ResNet-20, 20 images, 10 classes:
    200 x 270k, 216 MB in float32); the products are accumulated in float64.
    """
    with _eval_mode(model), torch.no_grad():
        f = _Sparse(model, masks, params)
        return _gram(_jacobian(f, x, chunk)).cpu()


# ---------------------------------------------------------------------------------------------
# Top eigenvalues
# ---------------------------------------------------------------------------------------------
def _kernel_operator(f: _Sparse, x: Tensor) -> tuple[Callable[[Tensor], Tensor], int]:
    """``v -> J (J^T v)`` by one reverse (vjp) then one forward (jvp) pass; and NK."""
    x = f.input(x)
    primals = dict(f.diff)

    def outputs(diff: Mapping[str, Tensor]) -> Tensor:
        return f(diff, x).reshape(-1)

    out, vjp_fn = vjp(outputs, primals)
    size = out.numel()

    def matvec(v: Tensor) -> Tensor:
        (cotangent,) = vjp_fn(v.to(out.dtype))
        _, tangent_out = jvp(outputs, (primals,), (cotangent,))
        return tangent_out.detach().to(torch.float64)

    return matvec, size


def _lanczos(matvec: Callable[[Tensor], Tensor], n: int, k: int, iters: int, tol: float,
             seed: int) -> tuple[Tensor, bool]:
    """Top ``k`` Ritz values of a symmetric PSD operator (Lanczos, full reorthogonalisation)."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.zeros(iters, n, dtype=torch.float64)
    alphas: list[float] = []
    betas: list[float] = []
    q = torch.randn(n, generator=gen, dtype=torch.float64)
    q /= q.norm()
    beta = 0.0
    converged = False
    scale = 0.0
    for j in range(iters):
        basis[j] = q
        w = matvec(q)
        alpha = float(w @ q)
        alphas.append(alpha)
        w = w - alpha * q - (beta * basis[j - 1] if j > 0 else 0.0)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w -= basis[:j + 1].T @ (basis[:j + 1] @ w)
        beta = float(w.norm())
        tridiag = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tridiag += torch.diag(off, 1) + torch.diag(off, -1)
        theta, s = torch.linalg.eigh(tridiag)
        scale = max(scale, float(theta.abs().max()))
        if j + 1 >= min(k, n):
            residual = (beta * s[-1, -min(k, j + 1):]).abs()
            if bool((residual <= tol * max(scale, 1e-300)).all()):
                converged = True
                break
        if j + 1 == iters:
            break
        if beta <= 1e-12 * max(scale, 1e-300):  # invariant subspace: restart orthogonally
            w = torch.randn(n, generator=gen, dtype=torch.float64)
            for _ in range(2):
                w -= basis[:j + 1].T @ (basis[:j + 1] @ w)
            q = w / w.norm()
            beta = 0.0
        else:
            q = w / beta
        betas.append(beta)
    return theta.flip(0)[:k], converged or len(alphas) == n


def ntk_top_eigenvalues(
    model: nn.Module,
    x: Tensor,
    k: int,
    masks: Mapping[str, Tensor] | None = None,
    *,
    params: str = "prunable",
    method: str = "auto",
    iters: int | None = None,
    tol: float = 1e-10,
    seed: int = 0,
    chunk: int = 4,
) -> Tensor:
    """The ``k`` largest eigenvalues of the empirical NTK (float64, descending).

    ``"exact"``: ``eigvalsh`` of the explicit kernel. ``"lanczos"``: Lanczos with full
    reorthogonalisation on ``v -> J (J^T v)`` (``torch.func`` vjp then jvp), never forming the
    kernel; it stops when the top-k residuals fall below ``tol`` times the largest Ritz value or
    after ``iters`` steps (default ``min(NK, max(20k, 100))``). ``"auto"`` is exact while the
    Jacobian is small (NK <= 4096 and at most 1 GiB), Lanczos otherwise.
    """
    if method not in EIGEN_METHODS:
        raise PruningError(f"method must be one of {EIGEN_METHODS}, got {method!r}")
    if k < 1:
        raise PruningError(f"k must be >= 1, got {k}")
    with _eval_mode(model):
        f = _Sparse(model, masks, params)
        with torch.no_grad():
            rows = f(f.diff, f.input(x)[:1]).numel() * x.shape[0]
        if k > rows:
            raise PruningError(f"k={k} eigenvalues asked of an NTK of size {rows} (N*K)")
        if method == "auto":
            nbytes = rows * f.num_params * torch.finfo(f.dtype).bits // 8
            method = "exact" if rows <= EXACT_MAX_ROWS and nbytes <= EXACT_MAX_BYTES else "lanczos"
        if method == "exact":
            with torch.no_grad():
                values = torch.linalg.eigvalsh(_gram(_jacobian(f, x, chunk))).flip(0)
            return values[:k].cpu()
        if iters is not None and iters < k:
            raise PruningError(f"Lanczos needs iters >= k, got iters={iters} for k={k}")
        if not tol > 0:
            raise PruningError(f"tol must be > 0, got {tol}")
        matvec, n = _kernel_operator(f, x)
        iters = min(n, max(20 * k, 100)) if iters is None else min(n, int(iters))
        values, converged = _lanczos(matvec, n, k, iters, tol, seed)
        if not converged:
            warnings.warn(f"Lanczos did not reach tol={tol} in {iters} steps", stacklevel=2)
        return values.cpu()


# ---------------------------------------------------------------------------------------------
# PX's upper bound (the two copies: methods/px/ntk_bound.py)
# ---------------------------------------------------------------------------------------------
def px_bound(
    model: nn.Module,
    x: Tensor,
    masks: Mapping[str, Tensor] | None = None,
    *,
    approximate_unsupported: bool = False,
) -> dict[str, object]:
    """PX's upper bound on the prunable-weight NTK trace of the sparse net, with its factors.

    For a bias-free ReLU network, ``f_k(x) = sum_{p->k} v_p a_p(x) x_{s(p)}`` and, per output,
    Cauchy-Schwarz over the paths into k gives ``||d f_k(x_n)/d theta||^2 <= A_nk B_k`` with

    - ``A_nk = sum_{p->k} a_p(x_n) x_{n,s(p)}^2``: PX copy 1 with *every* Conv/Linear weight,
      the classifier included, replaced by its 0/1 mask, input ``x**2``, the ReLU on/off patterns
      and max-pool arg-maxes of the sparse network (eval mode) replayed, BatchNorm scale 1, no
      biases; one row per input, no gradient;
    - ``B_k = sum_{p->k} sum_{j in p} v_p^2 / theta_j^2 = sum_j m_j d z2_k / d(theta_j^2)``:
      copy 2 with every weight squared (``(mask*theta)**2``, classifier too), ReLU the identity,
      max-pool as a *sum* over its window (PX's average pool would shrink B), BatchNorm as
      ``s**2``, input all ones; K backward passes, the gradient summed over the kept prunable
      weights ``j`` only (pruned weights are not parameters of the sparse network).

    Returned: ``bound = sum_{n,k} A_nk B_k`` (the per-output form, >= the trace),
    ``path_activation = ||J_v^f||_F^2 = sum A``, ``path_kernel = ||J_theta^v||_F^2 = sum_k B_k``,
    ``frobenius_product`` (their product, >= ``bound``), and the tensors ``A`` (N x K), ``B`` (K).
    Both copies run in float64.

    Scope: exact for bias-free ReLU/max-pool networks with eval-mode BatchNorm whose shift is 0
    (as at initialisation). A parameter-free linear map (average pooling) multiplies both copies
    by its coefficient c where the product needs c^2; this cancels when every path into an output
    crosses the same such maps (a global average pool before the classifier, as in the CIFAR
    ResNets/VGGs). With biases or BN shifts the quantity is still reported but is no bound.
    """
    with _eval_mode(model):
        f = _Sparse(model, masks, "prunable")
        return ntk_trace_bound(model, f.input(x), f.masks, lambda inputs: f(f.diff, inputs),
                               approximate_unsupported=approximate_unsupported)
