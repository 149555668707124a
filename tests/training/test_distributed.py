"""Tests of pxprune.training.distributed: sharded batches, and a real two-process gloo DDP
training run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import plain_net  # noqa: E402
from helpers import random_masks, synthetic, tiny_net  # noqa: E402

from pxprune.data import iterate_batches
from pxprune.masks import Masks
from pxprune.training import distributed as D
from pxprune.training.recipes import Recipe
from pxprune.training.train import train

HERE = Path(__file__).parent


@pytest.mark.parametrize("augment", [False, True])
def test_shards_with_one_rank_equal_iterate_batches(augment):
    ds = synthetic(37, seed=0)
    ref = list(iterate_batches(ds, 8, seed=3, epoch=2, augment=augment))
    got = list(D.shard_batches(ds, 8, rank=0, world_size=1, seed=3, epoch=2, augment=augment))
    assert len(ref) == len(got) == 5
    for (x0, y0), (x1, y1) in zip(ref, got, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_partition_each_global_batch(world):
    ds = synthetic(50, seed=0)  # 50 = 3 x 16 + 2: the last global batch has 2 examples
    ref = list(iterate_batches(ds, 16, seed=1, epoch=0, augment=True))
    shards = [list(D.shard_batches(ds, 16, rank=r, world_size=world, seed=1, epoch=0,
                                   augment=True)) for r in range(world)]
    expected_batches = 4 if world == 2 else 3  # a 2-example batch cannot feed 3 ranks
    assert all(len(s) == expected_batches for s in shards)
    for b in range(expected_batches):
        x = torch.cat([shards[r][b][0] for r in range(world)])
        y = torch.cat([shards[r][b][1] for r in range(world)])
        assert torch.equal(x, ref[b][0]) and torch.equal(y, ref[b][1])
        sizes = [shards[r][b][1].numel() for r in range(world)]
        assert max(sizes) - min(sizes) <= 1


def test_single_process_helpers_are_no_ops():
    assert not D.is_distributed()
    assert (D.get_rank(), D.get_world_size(), D.is_main_process()) == (0, 1, True)
    assert D.all_reduce_sum([1.5, 2]) == [1.5, 2.0]
    m = Masks.ones(tiny_net())
    assert D.broadcast_masks(m) is m
    assert D.shard_range(10, 2, 3) == (7, 10) and D.shard_range(10, 0, 3) == (0, 4)
    env = {k: os.environ.pop(k) for k in ("WORLD_SIZE", "RANK") if k in os.environ}
    try:
        info = D.init_distributed(device="cpu")
    finally:
        os.environ.update(env)
    assert (info.rank, info.world_size, info.is_main, str(info.device)) == (0, 1, True, "cpu")
    assert not D.is_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Launch tests/ddp_worker.py on two CPU processes with torchrun (gloo)."""
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--nnodes", "1", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(HERE / "ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_ddp_masks_broadcast_from_rank0(ddp_run):
    r0 = json.loads((ddp_run / "rank0.json").read_text())
    r1 = json.loads((ddp_run / "rank1.json").read_text())
    assert r0["before"] != r1["before"]  # each rank scored its own masks
    assert r0["after"] == r1["after"] == r0["before"]  # ... and now both hold rank 0's
    assert r0["reduced"] == r1["reduced"] == [3.0]
    assert r0["summary"]["masks_sha256"] == r0["before"]
    assert r0["summary"] == r1["summary"]  # all-reduced metrics: same numbers on every rank


def test_ddp_weights_identical_and_training_works(ddp_run):
    a = torch.load(ddp_run / "bn_rank0.pt")
    b = torch.load(ddp_run / "bn_rank1.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    masks = random_masks(tiny_net(seed=100), 0.5, seed=10)  # rank 0's masks
    for name, m in masks.items():
        assert torch.count_nonzero(a[name][~m]) == 0
        assert torch.count_nonzero(a[name][m]) == int(m.sum())
    lines = [json.loads(s) for s in (ddp_run / "bn" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[-1]["train_loss"] < 0.5 * lines[0]["train_loss"]
    summary = json.loads((ddp_run / "bn" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 6
    assert summary["final_test_acc"] >= 60.0  # chance is 25 %
    files = sorted(p.name for p in (ddp_run / "bn").iterdir())
    assert files == ["metrics.jsonl", "model.pt", "summary.json"]  # one writer, no temp files


def test_ddp_equals_single_process_with_same_global_batch(ddp_run, tmp_path):
    recipe = Recipe(lr=0.05, momentum=0.9, weight_decay=5e-3, epochs=3, batch_size=16,
                    milestones=(2,), eval_batch_size=16, precision="fp32")  # exact comparison
    ref = plain_net(seed=200)
    s = train(ref, None, synthetic(96, seed=1), synthetic(40, seed=2), recipe,
              out_dir=tmp_path / "single", progress=False, log=None)
    r0 = torch.load(ddp_run / "plain_rank0.pt")
    r1 = torch.load(ddp_run / "plain_rank1.pt")
    for k, v in ref.state_dict().items():
        assert torch.equal(r0[k], r1[k]), k
        torch.testing.assert_close(r0[k], v, rtol=1e-4, atol=1e-5)
    ddp = json.loads((ddp_run / "plain" / "summary.json").read_text())
    assert ddp["final_test_acc"] == pytest.approx(s["final_test_acc"], abs=2.6)
    assert ddp["final_train_loss"] == pytest.approx(s["final_train_loss"], rel=1e-3)
