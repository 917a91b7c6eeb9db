"""NCStats.all_reduce over two gloo processes equals one process on all the data."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _nc_oracle import clustered
from ncscope import NCStats, nc_metrics


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        h, y = clustered(5, 16, 20, 0.2, seed=7)
        w = torch.randn(5, 16, generator=torch.Generator().manual_seed(3))
        shard = slice(rank, None, world)
        s = NCStats(5, weight=w).update(h[shard], y[shard])
        s.all_reduce()
        s.update_measured(h[shard], y[shard])
        s.all_reduce()
        if rank == 0:
            torch.save(s.compute(), out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_all_reduce_two_processes_matches_single(tmp_path) -> None:
    init_file, out_file = str(tmp_path / "init"), str(tmp_path / "out.pt")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_worker, args=(2, init_file, out_file), nprocs=2, start_method="spawn")
    got = torch.load(out_file, weights_only=True)
    h, y = clustered(5, 16, 20, 0.2, seed=7)
    w = torch.randn(5, 16, generator=torch.Generator().manual_seed(3))
    want = nc_metrics(h, y, weight=w)
    for key in ("nc1", "cdnv", "nc3", "nc4", "ncc_accuracy", "equiangular_means"):
        assert got[key] == pytest.approx(want[key], rel=1e-10), key


def test_all_reduce_without_process_group_is_a_no_op() -> None:
    h, y = clustered(3, 4, 5, 0.1)
    s = NCStats(3).update(h, y)
    before = s.ref_sum.clone()
    s.all_reduce()
    assert torch.equal(s.ref_sum, before)
