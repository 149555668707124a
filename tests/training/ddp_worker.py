"""Worker for tests/test_distributed.py, launched by ``python -m torch.distributed.run``.

Each rank draws its own random masks and its own initial weights, broadcasts rank 0's masks,
trains with pxprune.training.train under a gloo process group, and writes what it ended with to OUT.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers

from helpers import random_masks, synthetic, tiny_net  # noqa: E402

from pxprune.training import distributed as D  # noqa: E402
from pxprune.training.recipes import Recipe  # noqa: E402
from pxprune.training.train import masks_fingerprint, train  # noqa: E402


def plain_net(seed: int) -> nn.Module:
    """A BN-free net: DDP over 2 ranks then matches one process with the same global batch."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(24, 4))


def main() -> None:
    out = Path(sys.argv[1])
    info = D.init_distributed()
    assert D.is_distributed() and info.world_size == 2 and str(info.device) == "cpu"
    rank = info.rank
    train_set, test_set = synthetic(96, seed=1), synthetic(40, seed=2)
    recipe = Recipe(lr=0.05, momentum=0.9, weight_decay=5e-3, epochs=3, batch_size=16,
                    milestones=(2,), eval_batch_size=16, precision="fp32")  # exact comparison

    # (a) BN net, masks scored differently on each rank, rank 0's broadcast inside train()
    model = tiny_net(seed=100 + rank)
    mine = random_masks(model, 0.5, seed=10 + rank)
    shared = D.broadcast_masks(mine)
    bn_recipe = Recipe(lr=0.1, weight_decay=5e-4, epochs=6, batch_size=16, milestones=(4,),
                       eval_batch_size=16)
    summary = train(model, mine, train_set, test_set, bn_recipe, out_dir=out / "bn",
                    progress=False, log=None)
    torch.save(model.state_dict(), out / f"bn_rank{rank}.pt")

    # (b) BN-free net, dense, to compare with a single process
    model_b = plain_net(seed=200 + rank)
    train(model_b, None, train_set, test_set, recipe, out_dir=out / "plain", progress=False,
          log=None)
    torch.save(model_b.state_dict(), out / f"plain_rank{rank}.pt")

    (out / f"rank{rank}.json").write_text(json.dumps({
        "before": masks_fingerprint(mine),
        "after": masks_fingerprint(shared),
        "summary": summary,
        "reduced": D.all_reduce_sum([rank + 1.0]),
    }))
    D.cleanup()


if __name__ == "__main__":
    main()
