"""DistributedDataParallel: batch partition, and 2 gloo processes under torchrun vs 1 process."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st

from ncscope.collapse import METRICS
from ncscope.train import DistInfo, epoch_batches


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    per_rank=st.integers(1, 40),
    world=st.integers(1, 4),
    epoch=st.integers(0, 5),
    seed=st.integers(0, 2**31),
)
def test_global_batches_do_not_depend_on_the_world_size(n, per_rank, world, epoch, seed) -> None:
    """Global batch k of W processes holds the examples of batch k of one process (when W
    divides n; otherwise the padding duplicates are flagged), and every example appears once
    among the non-padding positions."""
    batch = per_rank * world
    single = epoch_batches(n, batch, epoch, seed, DistInfo())
    ranks = [epoch_batches(n, batch, epoch, seed, DistInfo(r, world)) for r in range(world)]
    assert len({len(b) for b in ranks}) == 1  # same number of steps on every rank
    real = sorted(
        i for b in ranks for idx, pad in b for i, p in zip(idx, pad, strict=True) if not p
    )
    assert real == list(range(n))
    assert not any(p for idx, pad in single for p in pad)
    if n % world == 0:
        assert len(single) == len(ranks[0])
        for k, (idx, _) in enumerate(single):
            assert sorted(idx) == sorted(i for b in ranks for i in b[k][0])
    assert math.ceil(n / world) == sum(len(idx) for idx, _ in ranks[0])


def test_batch_size_must_divide_by_the_world_size() -> None:
    with pytest.raises(ValueError, match="divisible"):
        epoch_batches(10, 5, 0, 0, DistInfo(0, 2))


_SCRIPT = textwrap.dedent(
    '''
    """Tiny AT run of a BN-free MLP on synthetic data (also imported by the test)."""
    import sys
    from collections import OrderedDict

    import torch
    from torch import nn

    from ncscope.data import load_dataset
    from ncscope.models import Normalize
    from ncscope.train import TrainConfig, Trainer


    class PlainMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.normalize = Normalize(0.5, 0.25)
            self.flatten = nn.Flatten()
            self.features = nn.Sequential(OrderedDict(
                fc1=nn.Linear(64, 32), relu1=nn.ReLU(), fc2=nn.Linear(32, 16), relu2=nn.ReLU()))
            self.classifier = nn.Linear(16, 5)
            self.tap_layers = ["features.relu1"]

        def forward(self, x):
            return self.classifier(self.features(self.flatten(self.normalize(x))))


    def run(out_dir):
        opts = {"num_classes": 5, "size": 20, "noise": 0.3}
        train = load_dataset("synthetic", split="train", **opts)
        test = load_dataset("synthetic", split="test", **opts)
        torch.manual_seed(0)
        cfg = TrainConfig(
            data={"dataset": "synthetic", "kwargs": opts}, model={"name": "bn_mlp"}, mode="at",
            epochs=3, batch_size=10, lr=0.05, schedule="constant", eps=0.05, steps=3,
            random_start=False, track_fresh_attack=True, track_layers="all", out_dir=out_dir,
            threads=1, progress=False,
        )
        return Trainer(PlainMLP(), train, test, cfg).fit()


    if __name__ == "__main__":
        run(sys.argv[1])
    '''
)


def _where(row: dict) -> tuple:
    return tuple(row[k] for k in ("epoch", "layer", "source", "split", "reference", "metric"))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_torchrun_two_processes_match_one_process(tmp_path) -> None:
    """Adversarial training under ``torchrun --nproc_per_node 2`` (gloo, DDP, per-rank
    attacks, NC accumulators all-reduced, rank 0 writing) gives the same weights and metric
    rows as one process, up to floating-point reduction order.

    Why this configuration makes the comparison meaningful: the model has no BatchNorm
    (batch statistics of 1 x 10 and 2 x 5 examples would differ by design) and PGD has no
    random start (each rank draws its own noise), so every per-example computation is the same
    in both runs: global batch k holds the same 10 examples (DistributedSampler order, per-rank
    batch 5; 100 examples, no padding), DDP averages the two half-batch mean gradients into
    the full-batch mean, and the measurements are sums over a sharded training set.
    """
    script = tmp_path / "ddp_script.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(script), str(tmp_path / "two"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    spec = importlib.util.spec_from_file_location("ddp_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    one = module.run(str(tmp_path / "one"))

    two_state = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    for key, value in one.model.state_dict().items():
        assert torch.allclose(value, two_state[key], rtol=1e-5, atol=1e-6), key
    rows1, rows2 = _rows(tmp_path / "one" / "history.jsonl"), one.rows
    assert rows1 == rows2
    rows2 = _rows(tmp_path / "two" / "history.jsonl")
    # long schema: epochs x (layers x sum over views of their metrics + the 5 epoch logs); own
    # views (clean, perturbed, fresh pgd) skip the cross-reference metrics, the clean-reference
    # views (those three on train, clean and pgd on test) carry them all
    scalar = [m for m in METRICS.values() if not m.per_class]
    n_own = sum(not m.cross_reference for m in scalar)
    n_clean = len(scalar)
    assert n_clean > n_own > 0
    views = {
        ("clean", "train", "own"),
        ("clean", "train", "clean"),
        ("clean", "test", "clean"),
        ("perturbed", "train", "own"),
        ("perturbed", "train", "clean"),
        ("pgd", "train", "own"),
        ("pgd", "train", "clean"),
        ("pgd", "test", "clean"),
    }
    assert len(rows1) == len(rows2) == 3 * (2 * (3 * n_own + 5 * n_clean) + 5)
    assert {(r["source"], r["split"], r["reference"]) for r in rows2} == views | {
        ("training", "train", None)
    }
    assert {r["layer"] for r in rows2} == {"features.relu1", "classifier:in", None}
    assert one.final("clean")["net_accuracy"] > 0.5  # it learned: the comparison is not void
    for a, b in zip(rows1, rows2, strict=True):
        assert a.keys() == b.keys()
        for k, va in a.items():
            vb = b[k]
            if isinstance(va, float) and isinstance(vb, float):
                assert vb == pytest.approx(va, rel=1e-5, abs=1e-9), (k, _where(a))
            else:
                assert va == vb, (k, _where(a))
    # only rank 0 wrote results
    assert not any("rank1" in p.name for p in (tmp_path / "two").rglob("*") if p.is_file())
