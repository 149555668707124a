"""Several GPUs and machines: process group from torchrun, DDP, sharded batches, mask broadcast.

Launch with ``torchrun --nproc_per_node N ...``; :func:`init_distributed` reads the torchrun
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and picks NCCL on CUDA,
gloo on CPU. Every rank walks the same (seed, epoch) permutation of the data and takes its own
slice of each global batch, so the data seen per step, and its augmentation, equal those of a
single process with the same global batch. Masks are computed on rank 0 and broadcast.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..data.augment import crop_flip, normalize
from ..data.dataset import ImageDataset
from ..data.loader import derive_seed, epoch_order, num_batches
from ..masks import Masks


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size, its local rank and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0


def is_distributed() -> bool:
    """True when a process group is initialised (train() then shards data and syncs metrics)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 or when not distributed."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def init_distributed(backend: str | None = None, device: str | None = None) -> DistInfo:
    """Initialise the default process group from torchrun's environment variables.

    Without WORLD_SIZE in the environment (a plain ``python`` launch) nothing is initialised and
    a single-process DistInfo is returned, so scripts can call this unconditionally. The backend
    is NCCL when CUDA is available (each rank on ``cuda:LOCAL_RANK``) and gloo otherwise.
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        dev = torch.device(device or ("cuda" if use_cuda else "cpu"))
        return DistInfo(0, 1, 0, dev)
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not is_distributed():
        dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"))
    return DistInfo(rank, world, local_rank, dev)


def cleanup(timeout_s: float = 120.0) -> None:
    """Wait for every rank (at most ``timeout_s`` on gloo), then destroy the process group.

    Without the wait, a rank that tears gloo down while another still uses it can abort that
    rank natively ("terminate called without an active exception", seen in the DDP tests).
    """
    if not is_distributed():
        return
    try:
        if dist.get_backend() == "gloo":  # bounded: a failed rank must not hang the others
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout_s))
        else:
            dist.barrier()
    except RuntimeError:
        pass  # another rank failed: its error is what the user needs, not this one
    dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Device the collective backend needs tensors on (CUDA for NCCL, CPU for gloo)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def wrap_ddp(model: nn.Module, device: torch.device | str, sync_bn: bool = False) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel (optionally converting BN to SyncBatchNorm).

    Parameters and buffers are broadcast from rank 0 at construction, so every rank starts from
    rank 0's weights. Returns the model unchanged when not distributed.
    """
    if not is_distributed():
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device = torch.device(device)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sum a few numbers over ranks (float64; returned unchanged when not distributed)."""
    return _all_reduce(values, "sum")


def all_reduce_max(values: Sequence[float]) -> list[float]:
    """Maximum of a few numbers over ranks (e.g. the slowest rank's time)."""
    return _all_reduce(values, "max")


def _all_reduce(values: Sequence[float], op: str) -> list[float]:
    """All-reduce a short list of floats with ``op`` (sum or max) in float64."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.cpu().tolist()


@torch.no_grad()
def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BN running statistics) over ranks, in place.

    DDP broadcasts rank 0's buffers before each forward, but after the last step of an epoch
    each rank holds statistics of its own batch; averaging (as timm's distribute_bn does) makes
    evaluation, checkpoints and final weights identical on every rank and uses every rank's data.
    """
    if not is_distributed():
        return
    world = dist.get_world_size()
    dev = _comm_device()
    for buf in unwrap(model).buffers():
        if buf.is_floating_point():
            t = buf.detach().to(dev, torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            buf.copy_((t / world).to(buf.device, buf.dtype))


def broadcast_object(obj: object, src: int = 0) -> object:
    """A picklable object from rank ``src`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_masks(masks: Masks | None, src: int = 0) -> Masks:
    """Rank ``src``'s masks on every rank (other ranks may pass None or their own masks).

    Names and shapes travel as a pickled object, the bits as one uint8 tensor, so every rank ends
    with masks identical to those of ``src`` whatever it held before.
    """
    if not is_distributed():
        if masks is None:
            raise ValueError("broadcast_masks needs masks when not distributed")
        return masks
    rank = dist.get_rank()
    if rank == src and masks is None:
        raise ValueError(f"rank {src} must pass the masks to broadcast")
    meta = [(n, tuple(m.shape)) for n, m in masks.items()] if rank == src else None
    meta = broadcast_object(meta, src=src)
    total = sum(int(torch.Size(s).numel()) for _, s in meta)
    dev = _comm_device()
    if rank == src:
        flat = torch.cat([masks[n].reshape(-1) for n, _ in meta]).to(torch.uint8).to(dev)
    else:
        flat = torch.empty(total, dtype=torch.uint8, device=dev)
    dist.broadcast(flat, src=src)
    flat = flat.cpu().bool()
    out, i = {}, 0
    for n, shape in meta:
        k = int(torch.Size(shape).numel())
        out[n] = flat[i : i + k].reshape(shape).clone()
        i += k
    return Masks(out)


def shard_batches(
    dataset: ImageDataset,
    batch_size: int,
    *,
    rank: int,
    world_size: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    augment: bool = False,
    device: str | torch.device = "cpu",
    drop_last: bool = False,
    padding: int = 4,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's slice of every global batch of the (seed, epoch) order, normalised, on device.

    Global batch b is split into ``world_size`` near-equal contiguous chunks (torch.tensor_split)
    and rank r takes chunk r. Crop/flip parameters are drawn for the whole global batch from the
    same (seed, epoch, 1, b) stream as ``data.iterate_batches`` and sliced, so with world_size 1
    this yields exactly what iterate_batches yields, and the union over ranks equals it. A final
    global batch with fewer examples than ranks is skipped (every rank must take part in each
    step), the same on every rank.
    """
    device = torch.device(device)
    n = len(dataset)
    order = epoch_order(n, seed, epoch, shuffle)
    for b in range(num_batches(n, batch_size, drop_last)):
        idx = order[b * batch_size : (b + 1) * batch_size]
        m = idx.numel()
        if m < world_size:
            continue
        lo, hi = shard_range(m, rank, world_size)
        mine = idx[lo:hi]
        x = dataset.images[mine].to(device, non_blocking=True)
        y = dataset.labels[mine].to(device, non_blocking=True)
        if augment:
            g = torch.Generator().manual_seed(derive_seed(seed, epoch, 1, b))
            # same draws, in the same order, as data.augment.random_crop_flip on the global batch
            top = torch.randint(0, 2 * padding + 1, (m,), generator=g)
            left = torch.randint(0, 2 * padding + 1, (m,), generator=g)
            flip = torch.randint(0, 2, (m,), generator=g).bool()
            x = crop_flip(x, top[lo:hi], left[lo:hi], flip[lo:hi], padding)
        yield normalize(x, dataset.mean, dataset.std), y


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous [lo, hi) share of ``n`` items for ``rank`` (used to split evaluation)."""
    lo = (n // world_size) * rank + min(rank, n % world_size)
    return lo, lo + n // world_size + (1 if rank < n % world_size else 0)
