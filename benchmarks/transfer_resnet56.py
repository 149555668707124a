"""Transfer study (a): pre-trained CIFAR ResNet-56 pruned by each method, ridge probe, no training.

Is the subnetwork a method keeps from a pre-trained model directly usable? For each method and
each of the nine sparsities 1 - 0.8**k (k = 2, 4, ..., 18) the backbone is pruned with the
downstream pruning split (10 images per class, seed 0) while a ridge probe fitted on the dense
features sits in the classifier (``prune_for_transfer(head="probe")``), then a fresh ridge probe
(respecting the classifier's mask, l2 chosen on a held-out 20 % of the probe's training images)
is fitted on the pruned features and evaluated on test images. The dense model is the reference.

Schedules: one-shot methods (magnitude, random, SNIP, GraSP) prune once per sparsity. Multi-round
methods (PX, SynFlow, SynFlow-L2, NTK-SAP) follow one chain of rounds that each keep 0.8**(1/R)
of the remaining weights (R = ``--rounds-per-step``, density 0.8**(r/R) after round r), so the
mask at sparsity 1 - 0.8**k has had k*R rounds (R=2: 4 ... 36 rounds instead of the paper's 100
per target; a CPU budget choice, stated in the JSON).

Methods are names or specs (``px[variant=bound]``). ``px`` is PX's default scoring, the
authors' 2024 code (float32, the method's default); ``px[variant=bound]`` is the NTK-trace bound
(float64 here, as in the committed cells: its all-ones copy 1 outgrows float32 on these nets).
JSONs written before 2026-11-30 keyed the bound as ``px``: they record no ``resolved_methods``,
and their ``px`` cells are relabelled ``px[variant=bound]`` when loaded (``migrate_legacy_px``).

Resumable: every finished cell is written to the JSON at once and skipped on a re-run; chains
save their masks after each round under ~/.cache/pxprune/transfer/, in files named by the
resolved method (``px+variant=cvpr2024``, never the bare ``px`` that older runs used, so the
bound's masks are never resumed as the default's), and continue from there.
Run: ``python benchmarks/transfer_resnet56.py`` (``--plot-only`` redraws the PNG).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

import pxprune
from pxprune.api import get_method
from pxprune.data import limit_per_class, load_dataset
from pxprune.experiments.provenance import cpu_name, dirty_files, git_commit
from pxprune.masks import Masks
from pxprune.methods.spec import folder_name, parse_method_spec, resolved_spec
from pxprune.transfer.features import extract_features
from pxprune.transfer.head import classifier_name
from pxprune.transfer.load import backbone_normalization, load_backbone
from pxprune.transfer.probe import fit_probe, install_probe, linear_probe
from pxprune.transfer.prune import pruning_batch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
KS = tuple(range(2, 19, 2))
SPARSITIES = tuple(1 - 0.8**k for k in KS)
STEP = 0.8  # density kept per step k in the multi-round chains (split into R rounds)
BOUND = "px[variant=bound]"
PLOT_ORDER = ("px", BOUND, "magnitude", "snip", "grasp", "synflow", "synflow_l2", "ntksap",
              "random")
COLORS = {"px": "C3", BOUND: "C6", "magnitude": "C0", "snip": "C1", "grasp": "C2",
          "synflow": "C4", "synflow_l2": "C9", "ntksap": "C5", "random": "C7"}
# The day ``px`` became the authors' 2024 scoring (commit 9710803); before it, ``px`` was the bound.
PX_SWITCH = "2026-11-30 (commit 9710803)"


def plot_rank(m: str) -> tuple[int, str]:
    """Sort key: PLOT_ORDER first, then any other method or spec by name."""
    return (PLOT_ORDER.index(m) if m in PLOT_ORDER else 99, m)


def default_methods() -> list[str]:
    """Every registered method except IMP (which needs training) and the PX bound, PX first."""
    ms = [m for m in pxprune.METHODS if m != "imp"] + [BOUND]
    return sorted(ms, key=plot_rank)


def method_options(method: str, args: argparse.Namespace) -> dict[str, object]:
    """Keyword options this study passes to ``pxprune.prune`` for ``method`` (a name or spec).

    PX's default (2024 scoring) runs with the method's defaults unless ``--px-precision`` is
    given; the bound runs in float64 (``--px-precision`` overrides), as the committed cells did,
    and takes ``--px-approx``."""
    name, options = parse_method_spec(method)
    if name != "px":
        return {}
    opts: dict[str, object] = {}
    bound = options.get("variant") == "bound"
    precision = args.px_precision or ("float64" if bound else None)
    if precision and "precision" not in options:
        opts["precision"] = precision
    if bound and args.px_approx:
        opts["approximate_unsupported"] = True
    return opts


def chain_cache_name(method: str, opts: dict[str, object]) -> str:
    """Filesystem-safe name of ``method``'s chain masks: the resolved spec with the options
    passed, so ``px`` (now ``px+variant=cvpr2024``) never reads the bound's masks."""
    name, options = parse_method_spec(resolved_spec(method))
    spec = name + ("[" + ",".join(f"{k}={v}" for k, v in {**options, **opts}.items()) + "]"
                   if options or opts else "")
    return folder_name(spec)


def migrate_legacy_px(result: dict) -> bool:
    """Relabel the ``px`` cells of a JSON written before ``px`` became the 2024 scoring.

    Such a JSON records no ``resolved_methods``; its ``px`` cells are the bound's (then PX's
    only definition, run in float64), so they become ``px[variant=bound]``, numbers unchanged.
    Its protocol's ``px_precision`` (one value, the bound's) is rewritten to name the variant.
    True when something was relabelled."""
    if "resolved_methods" in result or not result.get("cells"):
        return False
    moved = 0
    for key in [k for k, c in result["cells"].items() if c.get("method") == "px"]:
        cell = result["cells"].pop(key)
        cell["method"] = BOUND
        result["cells"][cell_key(BOUND, cell["k"])] = cell
        moved += 1
    proto = result.get("protocol", {})
    if isinstance(proto.get("px_precision"), str):
        proto["px_precision"] = {BOUND: proto["px_precision"]}
    result["resolved_methods"] = {m: resolved_spec(m) for m in
                                  sorted({c["method"] for c in result["cells"].values()})}
    result.setdefault("history", []).append(
        f"{moved} cells keyed 'px' were written (commit {str(result.get('git_commit'))[:7]}) "
        f"before {PX_SWITCH}, when 'px' meant the NTK-trace bound: relabelled "
        f"'{BOUND}', numbers unchanged")
    return moved > 0


def cell_key(method: str, k: int) -> str:
    """JSON key of one (method, sparsity) cell."""
    return f"{method}|{k}"


def same_protocol(result: dict, protocol: dict) -> bool:
    """Whether ``protocol`` is the one of the cells in ``result``: equal but for the precisions
    of PX variants that have no cell there yet (a migrated JSON names only the bound's)."""
    old, new = dict(result.get("protocol", {})), dict(protocol)
    old_px, new_px = old.pop("px_precision", {}), new.pop("px_precision", {})
    if old != new:
        return False
    if isinstance(old_px, str) or isinstance(new_px, str):
        return old_px == new_px
    present = {c["method"] for c in result.get("cells", {}).values()}
    return all(old_px.get(m) == new_px.get(m) for m in (set(old_px) | set(new_px)) & present)


# metadata of the run that wrote a JSON, kept under earlier_runs when a later run adds cells
EARLIER_RUN_KEYS = ("command", "merged_commands", "run_note", "git_commit", "git_dirty", "device",
                    "torch", "elapsed_s_this_run", "throughput_img_s")


class Study:
    """One transfer study: data, dense reference, cells saved to JSON as they finish."""

    def __init__(self, args: argparse.Namespace, meta: dict) -> None:
        self.args = args
        self.t0 = time.time()
        self.path = Path(args.out)
        self.cache = (Path.home() / ".cache" / "pxprune" / "transfer"
                      / f"{self.path.stem}_R{args.rounds_per_step}")
        self.cache.mkdir(parents=True, exist_ok=True)
        self.result = json.loads(self.path.read_text()) if self.path.exists() else {}
        if migrate_legacy_px(self.result):
            self.log(f"{self.path.name}: its 'px' cells predate {PX_SWITCH} and are the bound's; "
                     f"relabelled {BOUND}")
        if self.result and not same_protocol(self.result, meta["protocol"]):
            raise SystemExit(f"{self.path} holds another protocol; delete it or change --out")
        if "command" in self.result:  # what wrote the cells so far, before meta replaces it
            self.result.setdefault("earlier_runs", []).append(
                {k: self.result[k] for k in EARLIER_RUN_KEYS if k in self.result})
            for k in ("merged_commands", "run_note"):
                self.result.pop(k, None)
        if args.note:
            self.result["run_note"] = args.note
        self.result.update({k: v for k, v in meta.items() if k not in ("cells", "history")})
        self.result.setdefault("cells", {})
        self.result.setdefault("resolved_methods", {})

    def save(self) -> None:
        """Write the JSON atomically."""
        self.result["elapsed_s_this_run"] = round(time.time() - self.t0, 1)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1))
        os.replace(tmp, self.path)

    def log(self, msg: str) -> None:
        """Progress line with elapsed minutes."""
        print(f"[{(time.time() - self.t0) / 60:5.1f} min] {msg}", flush=True)


def evaluate(model, masks, train, test, size, seed) -> dict:
    """Refit a mask-respecting ridge probe on the pruned features; test accuracy and facts."""
    t = time.time()
    res = linear_probe(model, train, test, masks=masks, seed=seed, size=size, install=False)
    out = {
        "test_acc": round(100 * res.test_accuracy, 2),
        "holdout_acc": round(100 * res.probe.holdout_accuracy, 2),
        "train_acc": round(100 * res.train_accuracy, 2),
        "l2": res.l2,
        "eval_s": round(time.time() - t, 1),
    }
    if masks is not None:
        cls = classifier_name(model) + ".weight"
        out["sparsity_actual"] = round(100 * masks.sparsity(), 4)
        out["classifier_density"] = round(masks.layer_density().get(cls, 1.0), 4)
        out["collapsed_layers"] = masks.collapsed_layers()
    return out


def run(args: argparse.Namespace, meta: dict, build) -> None:
    """Run (or resume) all cells; ``build()`` -> (dense model, probe train, test, prune batch)."""
    st = Study(args, meta)
    model, train, test, batch = build()
    st.result.update({k: v for k, v in meta.items() if k not in ("cells", "protocol")})
    size = args.size
    if "dense" not in st.result:
        st.log("dense reference")
        st.result["dense"] = evaluate(model, None, train, test, size, args.seed)
        st.save()
    st.log(f"dense test acc {st.result['dense']['test_acc']} %")
    # The scoring head: a ridge probe fitted on the dense training features (head='probe').
    feats = extract_features(model, train, size=size)
    probe = fit_probe(*feats, num_classes=10, seed=args.seed)
    install_probe(model, probe.weight, probe.bias)
    head = classifier_name(model) + ".weight"

    def start() -> Masks | None:
        """Initial masks: None (everything prunable) or all but the classifier (--keep-head)."""
        if not args.keep_head:
            return None
        return Masks({k: v for k, v in Masks.ones(model).items() if k != head})
    for method in args.methods:
        spec = get_method(parse_method_spec(method)[0])
        opts = method_options(method, args)
        st.result["resolved_methods"][method] = resolved_spec(method)
        todo = [k for k in KS if cell_key(method, k) not in st.result["cells"]]
        if not todo:
            continue
        chain = spec.default_rounds > 1
        rps = args.rounds_per_step
        cache_name = chain_cache_name(method, opts)
        if chain:
            current, first = start(), 0
            last = max(todo) * rps
            for r in range(last, 0, -1):  # resume from the last saved round
                f = st.cache / f"{cache_name}_r{r}.safetensors"
                if f.exists():
                    current, first = Masks.load(f), r
                    break
            for r in range(first + 1, last + 1):
                density = STEP ** (r / rps)
                m = copy.deepcopy(model)
                if current is not None:
                    current.apply_(m)
                t = time.time()
                current = pxprune.prune(m, method, 1 - density, batch, rounds=1, masks=current,
                                        seed=args.seed + r, progress=False, **opts)
                current.save(st.cache / f"{cache_name}_r{r}.safetensors")
                st.log(f"{method} round {r} ({100 * (1 - density):.2f} %) {time.time() - t:.1f} s")
                k = r // rps
                if r % rps == 0 and k in todo:
                    cell = evaluate(m, current, train, test, size, args.seed)
                    cell.update(method=method, k=k, sparsity=100 * (1 - density),
                                rounds=r, prune_s=round(time.time() - t, 1))
                    st.result["cells"][cell_key(method, k)] = cell
                    st.save()
                    st.log(f"{method} {cell['sparsity']:.2f} % -> {cell['test_acc']} %")
        else:
            for k in todo:
                m = copy.deepcopy(model)
                t = time.time()
                masks = pxprune.prune(m, method, 1 - 0.8**k, batch, rounds=1, seed=args.seed,
                                      masks=start(), progress=False, **opts)
                prune_s = time.time() - t
                cell = evaluate(m, masks, train, test, size, args.seed)
                cell.update(method=method, k=k, sparsity=100 * (1 - 0.8**k), rounds=1,
                            prune_s=round(prune_s, 1))
                st.result["cells"][cell_key(method, k)] = cell
                st.save()
                st.log(f"{method} {cell['sparsity']:.2f} % -> {cell['test_acc']} % "
                       f"(prune {prune_s:.1f} s)")
    st.log("done")
    plot(st.path, st.result)


def plot(path: Path, result: dict | None = None) -> None:
    """Accuracy vs sparsity, one line per method, dense dashed; PNG beside the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = json.loads(path.read_text()) if result is None else result
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    methods = sorted({c["method"] for c in result["cells"].values()}, key=plot_rank)
    xs = list(range(len(KS)))
    for m in methods:
        pts = [(i, result["cells"][cell_key(m, k)]["test_acc"]) for i, k in enumerate(KS)
               if cell_key(m, k) in result["cells"]]
        style = ({"linewidth": 2.5, "zorder": 5} if m == "px" else
                 {"linewidth": 1.8, "linestyle": "--", "zorder": 4} if m == BOUND else
                 {"linewidth": 1.3})
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4, label=m,
                color=COLORS.get(m), **style)
    if "dense" in result:
        ax.axhline(result["dense"]["test_acc"], linestyle="--", color="k", label="dense")
    ax.set_xticks(xs, [f"{100 * (1 - 0.8**k):.2f}" for k in KS], rotation=30)
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("test accuracy (%), ridge probe")
    ax.set_title(result.get("title", path.stem), fontsize=9)
    ax.grid(alpha=0.3)
    ax.axhline(10, linestyle=":", color="grey", linewidth=1, label="chance")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    plt.close(fig)


def base_parser(
    out: str, train_pc: int, test_pc: int, rounds_per_step: int = 2,
) -> argparse.ArgumentParser:
    """Command-line options shared by the transfer studies."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=default_methods(),
                   help="method names or specs; px is the 2024 scoring, px[variant=bound] the "
                        "bound")
    p.add_argument("--train-per-class", type=int, default=train_pc)
    p.add_argument("--test-per-class", type=int, default=test_pc)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds-per-step", type=int, default=rounds_per_step,
                   help="chain rounds per factor 0.8 of density (multi-round methods)")
    p.add_argument("--out", default=str(RESULTS / out))
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--note", default=None, help="run_note stored in the JSON (environment, ...)")
    p.add_argument("--keep-head", action="store_true",
                   help="never prune the classifier (sparsity over the backbone; the refitted "
                        "probe is dense); default --out gets a _keephead suffix")
    p.add_argument("--merge-from", nargs="+", default=[],
                   help="JSON files of the same protocol (e.g. methods run in another process) "
                        "whose cells are added to --out, then the PNG is redrawn")
    p.add_argument("--px-approx", action="store_true",
                   help="px[variant=bound]: approximate_unsupported=True (only if the bound "
                        "refuses the model)")
    p.add_argument("--px-precision", choices=("float32", "float64"), default=None,
                   help="precision of every PX variant (default: px float32, the method's "
                        "default; px[variant=bound] float64, as the committed cells)")
    return p


def finish_args(args: argparse.Namespace, default_out: str) -> argparse.Namespace:
    """Point the default --out to a ``_keephead`` file when --keep-head is given."""
    if args.keep_head and Path(args.out) == RESULTS / default_out:
        args.out = str(RESULTS / default_out.replace(".json", "_keephead.json"))
    return args


def handled_other_mode(args: argparse.Namespace) -> bool:
    """Do --merge-from or --plot-only if asked (True: nothing left to run); else set threads."""
    if args.merge_from:
        merge(Path(args.out), args.merge_from)
        return True
    if args.plot_only:
        plot(Path(args.out))
        return True
    torch.set_num_threads(args.threads)
    return False


def head_protocol(keep_head: bool) -> str:
    """Protocol text: whether the classifier is pruned with the backbone."""
    if keep_head:
        return ("not pruned: only backbone weights are scored and thresholded (sparsity is over "
                "the backbone); the refitted probe is dense")
    return "pruned like every other layer (global threshold); the refitted probe respects it"


def chain_schedule(rps: int) -> str:
    """Protocol text of the pruning schedules for ``rps`` chain rounds per factor 0.8."""
    return ("one-shot: magnitude/random/snip/grasp (1 round each); multi-round methods "
            f"(px/synflow/synflow_l2/ntksap): one chain of rounds each keeping 0.8**(1/{rps}) "
            f"of the remaining weights, so sparsity 1-0.8**k has had {rps}*k rounds "
            f"({2 * rps} ... {18 * rps}) instead of the paper's 100 rounds per target")


def merge(out: Path, others: list[str]) -> None:
    """Add the cells of ``others`` (same protocol and dense reference) to ``out``; redraw."""
    result = json.loads(out.read_text())
    for other in others:
        extra = json.loads(Path(other).read_text())
        if extra.get("protocol") != result.get("protocol"):
            raise SystemExit(f"{other} holds another protocol than {out}")
        if extra.get("dense", {}).get("test_acc") != result.get("dense", {}).get("test_acc"):
            raise SystemExit(f"{other} has another dense reference than {out}")
        if "resolved_methods" not in result or "resolved_methods" not in extra:
            raise SystemExit("merge only JSONs that record resolved_methods (run the script on "
                             "each first: it relabels the old 'px' cells)")
        result["cells"].update(extra["cells"])
        result["resolved_methods"].update(extra["resolved_methods"])
        result.setdefault("merged_commands", []).append(extra.get("command"))
    out.write_text(json.dumps(result, indent=1))
    plot(out, result)


def cifar10_splits(backbone: str, args: argparse.Namespace, size: int | None = None) -> tuple:
    """CIFAR-10 (JPEG copy) normalised for ``backbone``: the limited train and test splits and
    the pruning batch (10 per class from the full training set, resized to ``size``)."""
    mean, std = backbone_normalization(backbone)
    full = load_dataset("cifar10", "train").with_normalization(mean, std)
    test = load_dataset("cifar10", "test").with_normalization(mean, std)
    train = limit_per_class(full, args.train_per_class)
    test = limit_per_class(test, args.test_per_class)
    return train, test, pruning_batch(full, 10, args.seed, size=size)


def probe_protocol(args: argparse.Namespace, image_size: int) -> dict:
    """The protocol fields both probe studies share (data splits, probe, schedule, precision)."""
    return {
        "pruning_split": "10 train images per class, seed 0 (pruning_split)",
        "probe_train": f"first {args.train_per_class} train images per class; l2 chosen on a "
                       "seeded 20 % per-class hold-out of them, refit on all",
        "test": f"first {args.test_per_class} test images per class",
        "head_while_scoring": "probe (ridge fitted on dense features)",
        "probe_after_pruning": "ridge refit on pruned features, respects classifier mask",
        "schedule": chain_schedule(args.rounds_per_step),
        "image_size": image_size,
        "px_precision": {"px": args.px_precision or "float32",
                         BOUND: args.px_precision or "float64"},
        "training": "none",
    }


def metadata(args: argparse.Namespace, **extra: object) -> dict:
    """Device, versions, command and protocol for the JSON."""
    return {
        "device": f"CPU: {cpu_name()} ({args.threads} torch threads, cores shared)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(), "git_dirty": dirty_files(),
        "command": "python " + " ".join(sys.argv),
        "dataset": "CIFAR-10 (JPEG copy)",
        "sparsities": [round(100 * s, 2) for s in SPARSITIES],
        **extra,
    }


def main() -> None:
    """Study (a): CIFAR ResNet-56 (option A, Idelbayev weights) -> CIFAR-10 (JPEG copy)."""
    p = base_parser("transfer_resnet56.json", 200, 200, rounds_per_step=2)
    p.add_argument("--size", type=int, default=None)
    args = finish_args(p.parse_args(), "transfer_resnet56.json")
    if handled_other_mode(args):
        return
    protocol = {
        "backbone": "resnet56_a (Idelbayev, trained on original CIFAR-10, 93.62 %)",
        **probe_protocol(args, 32),
    }
    if args.keep_head:  # absent otherwise, so the first study's JSON keeps its protocol
        protocol["classifier"] = head_protocol(True)
    meta = metadata(args, protocol=protocol,
                    title="pre-trained ResNet-56 -> CIFAR-10 (JPEG copy), ridge probe, no training"
                    + (", classifier not pruned" if args.keep_head else ""))

    def build():
        train, test, batch = cifar10_splits("resnet56_a", args)
        return load_backbone("resnet56_a", num_classes=10), train, test, batch

    run(args, meta, build)


if __name__ == "__main__":
    main()
