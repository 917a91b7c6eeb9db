"""Bridge between ``reproduce`` and the trainer: train one run, save model and history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from ncscope.attacks import PGD, TRADES
from ncscope.collapse import FeatureTaps, NCStats
from ncscope.data import load_dataset, make_loader
from ncscope.models import classifier_of, create_model, penultimate_layer

if TYPE_CHECKING:
    from ncscope.experiments.reproduce import ReproduceConfig

METRICS = ("nc1", "nc1_over_k", "equinorm_means", "equiangular_means", "equinorm_weights",
           "equiangular_weights", "nc3", "nc4", "ncc_accuracy", "net_accuracy")


def _lr(cfg: ReproduceConfig, t: float) -> float:
    if t < 0.25 * cfg.epochs:
        return cfg.lr
    if t < 0.375 * cfg.epochs:
        return cfg.lr / 10
    return cfg.lr / 100


def _nc(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    head = classifier_of(model)
    pen = penultimate_layer(model)
    stats = NCStats(head.out_features, head.weight.detach(), head.bias.detach())
    with FeatureTaps(model, [pen]) as taps, torch.no_grad():
        for x, y in batches:
            model(x)
            stats.update(taps.features[pen], y)
        for x, y in batches:
            model(x)
            stats.update_measured(taps.features[pen], y)
    return stats.compute()


def train_run(cfg: ReproduceConfig, run: str, out: Path) -> None:
    """Train ``run`` (st | at | trades | trades_bnquirk); write model.pt and history.json."""
    torch.manual_seed(cfg.seed)
    train = load_dataset(cfg.dataset, cfg.data_root, split="train", n_train=cfg.n_train,
                         seed=cfg.seed)
    model = create_model(cfg.model, dataset=cfg.dataset)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    alpha = cfg.eps / 4
    if run == "at":
        atk = PGD(model, eps=cfg.eps, alpha=alpha, steps=cfg.steps, model_mode="train",
                  seed=cfg.seed)
    elif run.startswith("trades"):
        atk = TRADES(model, eps=cfg.eps, alpha=alpha, steps=cfg.steps, seed=cfg.seed)
    else:
        atk = None
    rows: list[dict[str, Any]] = []
    x_all, y_all = train.tensors
    eval_batches = [(x_all[i:i + 512], y_all[i:i + 512]) for i in range(0, len(y_all), 512)]
    track_pgd = PGD(model, eps=cfg.eps, alpha=alpha, steps=cfg.steps, seed=cfg.seed + 7)
    for epoch in range(1, cfg.epochs + 1):
        loader = make_loader(train, batch_size=cfg.batch_size, seed=cfg.seed + epoch)
        n = len(loader)
        for i, (x, y) in enumerate(loader):
            for g in opt.param_groups:
                g["lr"] = _lr(cfg, epoch - 1 + (i + 1) / n)
            model.train(run != "trades_bnquirk")
            if run == "st":
                loss = nn.functional.cross_entropy(model(x), y)
            elif run == "at":
                loss = nn.functional.cross_entropy(model(atk(x, y)), y)
            else:
                xa = atk(x, y)
                logits = model(x)
                kl = nn.functional.kl_div(nn.functional.log_softmax(model(xa), 1),
                                          nn.functional.softmax(logits, 1), reduction="sum")
                loss = nn.functional.cross_entropy(logits, y) + cfg.trades_beta * kl / len(y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch == 1 or epoch % cfg.track_every == 0 or epoch == cfg.epochs:
            model.eval()
            adv = [(track_pgd(x, y), y) for x, y in eval_batches]
            for source, batches in (("clean", eval_batches), ("perturbed", adv)):
                res = _nc(model, batches)
                for m in METRICS:
                    rows.append(dict(run=run, epoch=epoch, source=source,
                                     layer=penultimate_layer(model), metric=m, value=res[m]))
    model.eval()
    d = out / run
    d.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), d / "model.pt")
    (d / "history.json").write_text(json.dumps(rows))


def load_history(out: Path, run: str) -> pd.DataFrame:
    """History rows of ``run`` (long format)."""
    return pd.DataFrame(json.loads((out / run / "history.json").read_text()))


def load_model(out: Path, run: str, cfg: ReproduceConfig | None = None) -> nn.Module:
    """The trained model of ``run`` in eval mode."""
    conf = json.loads((out / "config.json").read_text())
    model = create_model(conf["model"], dataset=conf["dataset"])
    model.load_state_dict(torch.load(out / run / "model.pt", weights_only=True))
    return model.eval()
