"""Training modes as objects: built-ins equal the original loop bit for bit; new modes and
losses plug in through the registries and train end to end.

The reference below is a copy of the trainer's original per-batch ``if/elif`` over
``"st"`` / ``"at"`` / ``"trades"`` (before modes became objects), kept here as an independent
oracle of the paper's protocols: Madry et al. 2018 (PGD in train mode, adversarial CE only,
extra clean forward), Zhang et al. 2019 (eval-mode KL attack, ``CE + beta * KL``, optional
BatchNorm quirk of the official code), as used by Su et al. 2024 (§experimental setup).
Everything runs on 200 digits images with a width-32 BN-MLP, one thread.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncscope.attacks import PGD, TRADES
from ncscope.data import UnknownNameError, load_dataset
from ncscope.models import create_model
from ncscope.train import (
    LOSSES,
    MODES,
    DistInfo,
    StepContext,
    StepOutput,
    TrainConfig,
    Trainer,
    TrainingMode,
    derive_seed,
    epoch_batches,
    lr_at,
    make_loss,
    register_loss,
    register_mode,
    trades_kl,
    train,
)
from ncscope.train.modes import MultiForward, TradesTraining, attack_settings
from ncscope.train.tracking import PURPOSE_TRAIN_ATTACK, fetch_batch

TINY = {
    "data": {"dataset": "digits", "n_per_class": 20},
    "model": {"name": "bn_mlp", "kwargs": {"widths": [32, 32]}},
    "epochs": 2,
    "batch_size": 50,
    "lr": 0.05,
    "eps": 0.1,
    "steps": 2,
    "threads": 1,
    "progress": False,
    "track_test": False,
    "track_test_attack": False,
}


def tiny(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **changes})


# ---------------------------------------------------------------------------- reference loop
def _reference_attack(model: nn.Module, cfg: TrainConfig, epoch: int) -> PGD | TRADES | None:
    if cfg.mode == "st":
        return None
    gen = torch.Generator()
    gen.manual_seed(derive_seed(cfg.seed, epoch, 0, PURPOSE_TRAIN_ATTACK))
    common = {
        "eps": cfg.eps,
        "alpha": cfg.effective_alpha,
        "steps": cfg.steps,
        "norm": cfg.norm,
        "model_mode": cfg.effective_attack_mode,
        "generator": gen,
        "checks": "off",
        "fast": cfg.fast_attacks and cfg.effective_attack_mode == "eval",
    }
    if cfg.mode == "at":
        return PGD(model, random_start=cfg.random_start, restarts=cfg.restarts,
                   paper_exact=cfg.paper_exact, **common)
    return TRADES(model, init_std=0.001 if cfg.random_start else 0.0, **common)


def reference_train(cfg: TrainConfig) -> nn.Module:
    """The original single-process training loop (no tracking: it does not touch weights)."""
    prev = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        data = load_dataset(cfg.data.dataset, split="train", n_per_class=cfg.data.n_per_class,
                            seed=cfg.data.seed)  # fmt: skip
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model.name, dataset=data.info, **cfg.model.kwargs)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)  # fmt: skip
        loss_fn = make_loss(cfg.loss, **cfg.loss_kwargs)
        torch.manual_seed(derive_seed(cfg.seed, 0, 0, 0))
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            if cfg.mode == "trades" and cfg.bn_quirk:
                model.eval()
            batches = epoch_batches(len(data), cfg.batch_size, epoch - 1, cfg.seed, DistInfo())
            attack = _reference_attack(model, cfg, epoch)
            for i, (idx, _pad) in enumerate(batches):
                lr = lr_at(cfg.schedule, epoch - 1, i, len(batches), cfg.epochs, cfg.lr)
                for group in opt.param_groups:
                    group["lr"] = lr
                x, y = fetch_batch(data, idx)
                if cfg.mode == "st":
                    loss = loss_fn(model(x), y)
                elif cfg.mode == "at":
                    x_adv = attack(x, y)
                    loss = loss_fn(model(x_adv), y)
                    if cfg.clean_forward and not cfg.paper_exact:
                        with torch.no_grad():
                            model(x)
                else:
                    x_adv = attack(x, y)
                    clean, adv = model(x), model(x_adv)
                    loss = loss_fn(clean, y) + cfg.trades_beta * trades_kl(adv, clean)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if cfg.mode == "at" and cfg.clean_forward and cfg.paper_exact:
                    with torch.no_grad():  # the paper's code: the clean forward after the step
                        model(x)
    finally:
        torch.set_num_threads(prev)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
    model.eval()
    return model


def views(history) -> set[tuple[str, str, str]]:
    """The measured (source, split, reference) views (the epoch-level ``training`` rows aside)."""
    h = history[history["source"] != "training"]
    return set(h[["source", "split", "reference"]].itertuples(index=False, name=None))


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize(
    "changes",
    [
        {"mode": "st"},
        {"mode": "st", "loss_kwargs": {"label_smoothing": 0.1}, "schedule": "cosine"},
        {"mode": "at"},
        {"mode": "at", "clean_forward": False, "random_start": False},
        {"mode": "at", "attack_mode": "eval", "restarts": 2},
        {"mode": "at", "paper_exact": True},
        {"mode": "trades"},
        {"mode": "trades", "bn_quirk": True},
        {"mode": "trades", "trades_beta": 1.0, "norm": "l2", "eps": 0.5},
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_builtin_modes_match_the_original_loop_bit_for_bit(changes: dict) -> None:
    cfg = tiny(**changes)
    res = train(cfg)
    _assert_same_state(res.model, reference_train(cfg))
    assert set(res.history["epoch"]) == {1, 2}


# ---------------------------------------------------------------------------- new modes
@contextlib.contextmanager
def registered(name: str, cls: type[TrainingMode]) -> Iterator[type[TrainingMode]]:
    """Register a mode for the duration of a test (the registry is process-global)."""
    register_mode(name, cls)
    try:
        yield cls
    finally:
        MODES.pop(name, None)


class Mart(TrainingMode):
    """MART (Wang et al., ICLR 2020): boosted CE on eval-mode PGD examples plus
    ``beta * KL(f(x) || f(x'))`` weighted per example by ``1 - p_y(x)``."""

    perturbs = True
    beta = 6.0
    calls = 0

    def build_attack(self, model: nn.Module, generator: torch.Generator) -> PGD:
        return PGD(model, random_start=True, **attack_settings(self.config, generator))

    def step(self, ctx: StepContext, x: Tensor, y: Tensor) -> StepOutput:
        type(self).calls += 1
        x_adv = ctx.perturb(x, y)
        logits, logits_adv = ctx.forward(x, x_adv)
        adv_probs = F.softmax(logits_adv, dim=1)
        top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
        runner_up = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
        boosted = F.cross_entropy(logits_adv, y) + F.nll_loss(
            torch.log(1.0001 - adv_probs + 1e-12), runner_up
        )
        nat_probs = F.softmax(logits, dim=1)
        true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
        kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(1)
        robust = (kl * (1.0000001 - true_probs)).sum() / x.shape[0]
        loss = boosted + self.beta * robust
        return StepOutput(loss, clean_logits=logits, adv_logits=logits_adv, x_adv=x_adv)


def within_class_variance(h: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Mean squared distance of each feature vector to its class mean in the batch."""
    onehot = F.one_hot(y, num_classes).to(h.dtype)
    means = (onehot.T @ h) / onehot.sum(0).clamp_min(1)[:, None]
    return ((h - means[y]) ** 2).sum(1).mean()


class NCRegularised(TrainingMode):
    """Clean CE plus ``lam`` times the within-class variance of the penultimate features
    (an NC1 regulariser), read through ``ctx.forward_features``."""

    lam = 1.0

    def step(self, ctx: StepContext, x: Tensor, y: Tensor) -> StepOutput:
        logits, feats = ctx.forward_features(x, layers=["classifier:in"])
        penalty = within_class_variance(feats["classifier:in"], y, logits.shape[1])
        return StepOutput(ctx.loss_fn(logits, y) + self.lam * penalty, clean_logits=logits)


def test_a_registered_mode_trains_end_to_end_with_tracking(tmp_path) -> None:
    """MART, defined in this file, through ``train(TrainConfig(mode="mart"))``: it reaches the
    trainer loop (its step runs once per batch), its perturbed batches are spooled and
    measured, and the run folder round-trips its config."""
    Mart.calls = 0
    with registered("mart", Mart):
        cfg = tiny(mode="MART", data={**TINY["data"], "n_test": 100}, track_test=True,
                   track_test_attack=True, out_dir=str(tmp_path))  # fmt: skip
        assert cfg.mode == "mart" and cfg.effective_attack_mode == "eval"
        res = train(cfg)
        assert TrainConfig.from_yaml(tmp_path / "config.yaml") == cfg
    assert Mart.calls == 2 * 4  # epochs x batches
    h = res.history
    assert set(h["epoch"]) == {1, 2}
    assert views(h) == {
        ("clean", "train", "own"),
        ("clean", "train", "clean"),
        ("perturbed", "train", "own"),
        ("perturbed", "train", "clean"),
        ("clean", "test", "clean"),
        ("pgd", "test", "clean"),
    }
    pert = h[(h["source"] == "perturbed") & (h["metric"] == "n_measured")]
    assert len(pert) == 2 * 2 and (pert["value"] == 200).all()
    last = res.final("clean")
    assert last["epoch"] == 2 and math.isfinite(last["nc1"])
    logs = h[(h["epoch"] == 2) & (h["source"] == "training")].set_index("metric")["value"]
    for key in ("run_loss", "run_clean_acc", "run_adv_acc"):
        assert math.isfinite(logs[key]), key
    assert [r["epoch"] for r in res.timings] == [1, 2]
    with pytest.raises(UnknownNameError, match="valid values: st, at, trades"):
        TrainConfig(mode="mart")  # unregistered again


def test_a_feature_regulariser_mode_sees_differentiable_features() -> None:
    """``ctx.forward_features`` hooks change nothing numerically (lam = 0 equals ST bit for
    bit) and gradients flow through the features (lam > 0 tightens the classes: lower NC1)."""

    class Off(NCRegularised):
        lam = 0.0

    class Strong(NCRegularised):
        lam = 0.5

    with registered("nc_off", Off), registered("nc_strong", Strong):
        off = train(tiny(mode="nc_off"))
        strong = train(tiny(mode="nc_strong"))
    st = train(tiny(mode="st"))
    _assert_same_state(off.model, st.model)
    assert off.rows == [r for r in st.rows if r["source"] != "pgd"]  # ST: + fresh PGD
    assert {r["source"] for r in st.rows} == {"clean", "pgd", "training"}
    assert views(strong.history) == {("clean", "train", "own"), ("clean", "train", "clean")}
    assert strong.final("clean")["nc1"] < 0.8 * st.final("clean")["nc1"]


def test_registered_loss_is_used_end_to_end() -> None:
    """A loss registered here is selected by name with its options, called once per batch by
    ``train``, and training with it equals the original loop bit for bit."""
    calls = []

    def squared_error(scale: float = 1.0):
        def fn(logits: Tensor, targets: Tensor) -> Tensor:
            calls.append(len(targets))
            onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
            return scale * F.mse_loss(logits, onehot)

        return fn

    register_loss("test_sq", squared_error)
    try:
        cfg = tiny(mode="at", loss="Test-SQ", loss_kwargs={"scale": 3.0})
        assert cfg.loss == "test_sq"
        res = train(cfg)
        assert calls == [50] * 8
        _assert_same_state(res.model, reference_train(cfg))
        base = train(cfg.replace(loss_kwargs={"scale": 1.0}))
        assert not torch.equal(base.model.classifier.weight, res.model.classifier.weight)
    finally:
        LOSSES.pop("test_sq", None)


# ---------------------------------------------------------------------------- registry
def test_mode_names_aliases_and_errors() -> None:
    assert list(MODES)[:3] == ["st", "at", "trades"]
    names = {"standard": "st", "STD-train": "st", "pgd": "at", "adv": "at",
             "pgd_train_TRADES": "trades", " Trades ": "trades"}  # fmt: skip
    for name, key in names.items():
        assert tiny(mode=name).mode == key, name
    with pytest.raises(UnknownNameError, match=r"unknown mode 'madry'; valid values: st, at, tr"):
        tiny(mode="madry")
    with pytest.raises(TypeError, match="mode must be a string"):
        TrainConfig(mode=3)
    with pytest.raises(ValueError, match="mode: expected a string"):
        tiny(mode=3)  # from_dict checks the type first
    with pytest.raises(ValueError, match="already registered"):
        register_mode("at", TradesTraining)
    with pytest.raises(TypeError, match="TrainingMode subclass"):
        register_mode("not_a_mode", object)  # type: ignore[arg-type]
    assert "not_a_mode" not in MODES


def test_trainer_uses_the_mode_object() -> None:
    model = create_model("bn_mlp", dataset="digits", widths=[8])
    data = load_dataset("digits", n_per_class=2)
    trainer = Trainer(model, data, config=tiny(mode="trades", bn_quirk=True))
    assert isinstance(trainer.mode, TradesTraining)
    assert trainer.mode.model_mode(1) == "eval" and trainer.mode.perturbs
    assert Trainer(model, data, config=tiny(mode="trades")).mode.model_mode(1) == "train"


def test_a_mode_that_perturbs_must_return_x_adv() -> None:
    class Forgetful(TrainingMode):
        perturbs = True

        def step(self, ctx, x, y):
            return StepOutput(ctx.loss_fn(ctx.forward(x), y))

    class NoAttack(TrainingMode):
        def step(self, ctx, x, y):
            return StepOutput(ctx.loss_fn(ctx.forward(ctx.perturb(x, y)), y))

    with registered("forgetful", Forgetful), pytest.raises(RuntimeError, match="no x_adv"):
        train(tiny(mode="forgetful", epochs=1))
    with registered("no_attack", NoAttack), pytest.raises(RuntimeError, match="built no attack"):
        train(tiny(mode="no_attack", epochs=1))


def test_multi_forward_features_under_ddp(tmp_path) -> None:
    """Features through a DistributedDataParallel-wrapped MultiForward (1 gloo process): the
    same logits and features as the plain model, and gradients reach the parameters."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    model = create_model("bn_mlp", dataset="digits", widths=[16, 8]).eval()
    x = torch.rand(6, 1, 8, 8)
    y = torch.arange(6) % 3
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(MultiForward(model))
        ctx = StepContext(model=model, multi_forward=ddp, loss_fn=F.cross_entropy,
                          config=tiny())  # fmt: skip
        (la, fa), (lb, fb) = ctx.forward_features(x, x.flip(0), layers="classifier:in")
        ha, hb = fa["classifier:in"], fb["classifier:in"]
        assert ha.shape == (6, 8) and ha.requires_grad
        assert torch.allclose(la, model(x)) and torch.allclose(lb, model(x.flip(0)))
        assert torch.allclose(hb, ha.flip(0))
        (F.cross_entropy(la, y) + within_class_variance(ha, y, 3)).backward()
        assert all(p.grad is not None for p in model.parameters())
    finally:
        dist.destroy_process_group()
