"""The GPU-ready path on the CPU: precision/channels-last settings, the bf16 autocast training
path with float64 NC statistics, the pinned-memory spool helpers, and ``gpu_check --dry-run``."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from ncscope.collapse.spool import TensorSpool
from ncscope.models import create_model
from ncscope.train import Callback, TrainConfig, Trainer
from ncscope.train.runtime import precision_context, to_memory_format

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _tiny_cfg(**kw):
    return TrainConfig.from_dict({
        "mode": "at", "epochs": 1, "batch_size": 8, "eps": 0.03, "steps": 2, "lr": 0.05,
        "threads": 1, "progress": False, "checkpoint_every": 0, "save_model": False,
        "track_subset": 2, "track_test": False, "track_test_attack": False, "device": "cpu",
        **kw,
    })


def _data(n=16, k=4):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % k
    return (0.5 * torch.rand(n, 1, 12, 12, generator=g) + 0.1 * y[:, None, None, None]), y


def test_precision_and_channels_last_are_validated():
    with pytest.raises(ValueError, match="precision='fp16' is not supported; use one of fp32"):
        TrainConfig.from_dict({"precision": "fp16"})
    with pytest.raises(TypeError, match="channels_last must be True or False"):
        TrainConfig(channels_last="yes")
    cfg = TrainConfig.from_dict({"precision": "bf16", "channels_last": True})
    assert (cfg.precision, cfg.channels_last) == ("bf16", True)


def test_precision_context_and_memory_format():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with precision_context("fp32", torch.device("cpu")):
        assert lin(x).dtype == torch.float32
    with precision_context("bf16", torch.device("cpu")):
        assert lin(x).dtype == torch.bfloat16
    img = torch.randn(2, 3, 5, 5)
    assert to_memory_format(img, True).is_contiguous(memory_format=torch.channels_last)
    assert to_memory_format(img, False) is img
    assert to_memory_format(x, True) is x  # not an image batch


class _Seen(Callback):
    def __init__(self):
        self.loss = math.nan

    def on_epoch_end(self, trainer, epoch, logs, rows):
        self.loss = logs["run_loss"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bf16_training_keeps_float64_statistics(precision):
    x, y = _data()
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, input_shape=(1, 12, 12))
    seen = []
    model.classifier.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    cb = _Seen()
    cfg = _tiny_cfg(precision=precision, channels_last=True)
    res = Trainer(model, (x, y), None, cfg, callbacks=[cb]).fit()
    assert math.isfinite(cb.loss)
    # training passes (attack + forward) ran in the asked precision; tracking in float32
    want = torch.bfloat16 if precision == "bf16" else torch.float32
    assert want in seen and seen[-1] == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    nc1 = res.history.query("metric == 'nc1'")["value"]
    assert len(nc1) and nc1.map(math.isfinite).all()


def test_bf16_changes_little_against_fp32():
    """One bf16 AT epoch lands near the fp32 one (same seed, data and batches)."""
    x, y = _data()
    weights = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = create_model("small_cnn", num_classes=4, input_shape=(1, 12, 12))
        Trainer(model, (x, y), None, _tiny_cfg(precision=prec, track_perturbed=False)).fit()
        weights[prec] = torch.cat([p.detach().flatten() for p in model.parameters()])
    rel = (weights["bf16"] - weights["fp32"]).norm() / weights["fp32"].norm()
    assert 0 < float(rel) < 0.05


def test_spool_host_copy_keeps_bytes_of_channels_last_batches(tmp_path):
    x = torch.rand(3, 2, 4, 5).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 1, 2])
    with TensorSpool(tmp_path, "cl") as spool:
        spool.append(x, y)
        (xb, yb), = list(spool.batches(8, device="cpu"))
    assert torch.equal(xb, x) and torch.equal(yb, y)


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_dry_run_passes_end_to_end(capsys):
    """The same code path as on a GPU (AT epochs fp32 + bf16, channels-last, the all-layer
    sweep, CPU/device agreement of the NC metrics), on the CPU at tiny sizes."""
    code = _gpu_check().main(["--dry-run", "--models", "vgg11_bn"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "all checks passed" in out and "| vgg11_bn |" in out


def test_gpu_check_without_cuda_skips_cleanly(capsys, monkeypatch):
    mod = _gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert mod.main([]) == 0
    assert "CUDA is not available" in capsys.readouterr().out


def test_gpu_check_agreement_catches_a_device_difference(monkeypatch):
    """The agreement check fails when the device-side metrics are off by 1e-5 relative."""
    mod = _gpu_check()
    orig = mod.metrics_of

    def skewed(feats, y, w, b, k, device):  # agreement() asks the device side first
        out = orig(feats, y, w, b, k, device)
        skewed.calls += 1
        return {key: v * (1 + 1e-5) for key, v in out.items()} if skewed.calls == 1 else out

    skewed.calls = 0
    monkeypatch.setattr(mod, "metrics_of", skewed)
    worst, _, count = mod.agreement("vgg11_bn", torch.device("cpu"), 4, 8)
    assert count > 0 and worst > mod.RTOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_spool_streams_back_every_byte_in_any_batch_size(tmp_path, dtype):
    """Sequential reads give back the appended batches exactly, in any chunking, twice."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(23, 2, 3, generator=g).to(dtype)
    y = torch.randint(0, 5, (23,), generator=g)
    t = (y + 1) % 5
    with TensorSpool(tmp_path, "bytes") as spool:
        for i in range(0, 23, 6):  # appended in 6s, read in 4s and 23s, twice
            spool.append(x[i:i + 6], y[i:i + 6], t[i:i + 6])
        for size in (4, 23, 4):
            parts = list(spool.batches_with_targets(size, device="cpu"))
            assert [len(p[1]) for p in parts] == [min(size, 23 - i) for i in range(0, 23, size)]
            xs, ys, ts = (torch.cat([p[j] for p in parts]) for j in range(3))
            assert xs.dtype == dtype and torch.equal(xs, x)
            assert torch.equal(ys, y) and torch.equal(ts, t)
