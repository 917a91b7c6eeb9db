"""Extension points end to end: a registered data set and model train, track and analyse
through the configs; a registered study runs under ``ncscope reproduce`` and gets its report
section. (New metrics: tests/test_sweep.py; new modes and losses: tests/test_train_modes.py.)"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from ncscope.cli import main
from ncscope.collapse import wide
from ncscope.data import DATASETS, DatasetInfo, ImageDataset
from ncscope.data.config import DataConfig
from ncscope.data.registry import DatasetSpec, register_dataset
from ncscope.experiments.analyze import AnalyzeSettings
from ncscope.experiments.studies import STUDIES, Claim, Study, register_study
from ncscope.models import MODELS, Normalize
from ncscope.models.config import ModelConfig
from ncscope.models.registry import ModelSpec, register_model
from ncscope.train import TrainConfig, train

# Well-separated blobs saturate the softmax: the attacks' gradient-masking flags are expected.
pytestmark = pytest.mark.filterwarnings("ignore::ncscope.attacks.AttackSanityWarning")

INFO = DatasetInfo("blobs4", 4, (1, 4, 4), (0.5,), (0.25,), default_model="tiny_net")


def _blobs(root: object, split: str, download: bool, **options: object) -> ImageDataset:
    """Four well-separated classes of 4x4 images (train 80, test 40)."""
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n = 80 if split == "train" else 40
    y = torch.arange(n) % 4
    centres = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    x = (centres[y] + 0.05 * torch.randn(n, 1, 4, 4, generator=g)).clamp(0, 1)
    return ImageDataset(x, y, INFO, split)


class TinyNet(nn.Module):
    """A user architecture: its head is called ``head`` (not ``classifier``)."""

    classifier_name = "head"

    def __init__(self, num_classes: int, mean: object, std: object, width: int = 8) -> None:
        super().__init__()
        self.norm = Normalize(mean, std)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)
        self.tap_layers = ["body.1"]  # the pre-activation (the ReLU output is head:in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.norm(x)))


def _register() -> None:
    if "blobs4" not in DATASETS:
        register_dataset("blobs4", DatasetSpec(INFO, _blobs, needs_root=False))
    if "tiny_net" not in MODELS:
        register_model("tiny_net", ModelSpec(
            lambda k, shape, mean, std, **kw: TinyNet(k, mean, std, **kw), (1, 4, 4),
            "test net"))


def test_registered_dataset_and_model_train_and_analyse(tmp_path) -> None:
    _register()
    cfg = TrainConfig(data={"dataset": "blobs4"}, model={"kwargs": {"width": 6}}, mode="at",
                      epochs=20, batch_size=16, lr=0.1, eps=0.05, steps=2, track_layers="all",
                      track_every=10,
                      out_dir=str(tmp_path / "run"), progress=False)
    assert cfg.model.name == "tiny_net"  # the data set's default model
    res = train(cfg)
    last = res.final("clean")
    assert last["layer"] == "head:in" and last["net_accuracy"] == 1.0
    assert set(res.history.layer.dropna()) == {"body.1", "head:in"}
    weights = tmp_path / "run" / "model.pt"
    out = tmp_path / "a.csv"
    assert main(["analyze", "--set", "data.dataset=blobs4", "--set", "model.name=tiny_net",
                 "--set", "model.kwargs={width: 6}", "--set", f"weights=[{weights}]",
                 "--set", "eps=0.05", "--set", f"out={out}", "--quiet"]) == 0
    table = wide(pd.read_csv(out).drop(columns="weights"))
    clean = table[(table.source == "clean") & (table.split == "test")]
    assert (clean.net_accuracy == 1.0).all() and len(clean) == 2


@dataclass
class ToyConfig:
    """A study config with the shared sections."""

    data: DataConfig = field(default_factory=lambda: DataConfig("blobs4"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig("tiny_net"))
    analyze: AnalyzeSettings = field(default_factory=lambda: AnalyzeSettings(
        eps=0.05, steps=2, sources=["clean", "pgd"]))
    epochs: int = 3
    seed: int = 0


def _toy_run(cfg: ToyConfig, folder: Path, progress: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    res = train(TrainConfig(data=cfg.data, model=cfg.model, epochs=cfg.epochs, lr=0.1,
                            batch_size=16, seed=cfg.seed,
                            track_test_attack=False, progress=False))
    table = cfg.analyze.measure(res.model, cfg.data.load("train"), cfg.data.load("test"),
                                progress=False)
    table.to_csv(folder / "analysis.csv", index=False)
    return {"timings_s": {"total": 1.0}}


def _toy_claims(folder: Path) -> list[Claim]:
    a = pd.read_csv(folder / "analysis.csv")
    sel = a[(a.source == "clean") & (a.split == "test") & (a.metric == "ncc_accuracy")]
    acc = float(sel.value.iloc[-1])
    return [Claim("C1", "Blobs are separable at the last layer", "NCC test accuracy ≥ 0.9",
                  {"ncc_test_acc": acc}, acc >= 0.9, margin=(acc - 0.9) / 0.9)]


def test_registered_study_runs_under_reproduce(tmp_path, capsys) -> None:
    _register()
    if "toy" not in STUDIES:
        register_study(Study(
            name="toy", title="Toy study", paper="tests", config=ToyConfig, run=_toy_run,
            claims=_toy_claims, figures=lambda folder: [],
            tables=lambda folder: [("analysis", pd.read_csv(folder / "analysis.csv").head())],
            quick={"epochs": 1},
            with_seed=lambda cfg, seed: dataclasses.replace(cfg, seed=seed)))
    try:
        assert main(["reproduce", "toy", "--set", "epochs=6", "--out", str(tmp_path),
                     "--quiet"]) == 0
        printed = capsys.readouterr().out
        assert "C1  holds" in printed
        claims = json.loads((tmp_path / "toy" / "claims.json").read_text())
        assert claims[0]["verdict"] == "holds" and claims[0]["numbers"]["ncc_test_acc"] >= 0.9
        page = (tmp_path / "report.html").read_text()
        assert "id='toy'" in page and "Toy study" in page
        # A second study run into the same folder joins the report index.
        assert main(["report", str(tmp_path)]) == 0
        # --seeds N: every seed in its folder, verdicts "holds in k of N" with margins.
        seeds = tmp_path / "seeds"
        assert main(["reproduce", "toy", "--set", "epochs=6", "--seeds", "2", "--out",
                     str(seeds), "--quiet"]) == 0
        printed = capsys.readouterr().out
        assert "C1  holds in 2 of 2 seeds" in printed and "margin +" in printed
        table = pd.read_csv(seeds / "toy-seeds.csv")
        assert table.verdict[0] == "holds in 2 of 2 seeds" and table.margin_min[0] >= 0
        for k in (0, 1):
            meta = json.loads((seeds / f"toy-seed{k}" / "study.json").read_text())
            assert meta["seed"] == k
        page = (seeds / "report.html").read_text()
        assert "Claims of toy over 2 seeds" in page and "id='toy-seed1'" in page
        assert main(["reproduce", "toy", "--seeds", "0", "--out", str(tmp_path / "z")]) == 2
    finally:
        STUDIES.pop("toy", None)
