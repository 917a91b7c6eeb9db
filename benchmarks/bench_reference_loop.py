"""Training epochs of ncscope against a re-implementation of the paper's own training loop.

The reference (:func:`ref_epoch`) is the loop of Su, Zhang, Tsilivis, Kempe (TMLR 2024), which
inherits PGD-AT from Rice, Wong & Kolter (ICML 2020, ``train_cifar.py``/``attack_pgd``) and TRADES
from Zhang et al. (ICML 2019, ``trades.py``), written out here in float32:

* **AT** -- model in train mode for the whole batch; ``attack_pgd``: a perturbation ``delta``
  (uniform start, clipped so ``X + delta`` is in [0, 1]), per step ``loss.backward()`` (so every
  parameter's gradient is formed too), ``delta += alpha * sign(grad)``, clip to the ball and
  the box, ``delta.grad.zero_()``; the restart-selection forward (train mode); then the robust
  forward, ``zero_grad``, backward, SGD step; then the clean forward (with graph, no backward).
* **TRADES** -- ``model.eval()``; ``x' = x + 0.001 N(0, I)``; per step the KL of
  ``f(x')`` against ``softmax(f(x))`` *recomputed* at every step, ``autograd.grad`` wrt ``x'``,
  signed step, projection, clip; ``model.train()``; loss ``CE(f(x), y) + 6 * KL(f(x) || f(x'))``
  with ``f(x)`` computed twice, as in the official ``trades_loss``.
* **ST** -- forward, cross-entropy, backward, step.

Both sides use the same model (deep copies of one seeded initialisation), the same data, the
same batch order (:func:`ncscope.train.distributed.epoch_batches`), the same per-iteration
learning rate (:func:`ncscope.train.schedules.lr_at`), the same SGD (momentum 0.9, weight decay
on all parameters) and the same attack noise (one generator seeded like the trainer's, drawn with
the same primitives), so the final weights agree to float rounding: the only differences are
the order of the float operations (AT: the projection ``X + clip(delta)`` against
``clip(x_adv)``, which moves inputs by an ulp; TRADES: ``f(x)`` evaluated twice and the KL
scaled by ``1/B`` before the sum) and the number of train-mode BatchNorm passes (running
statistics only; the weights are unaffected). An ulp can flip the sign of a near-zero input
gradient, which moves that pixel by ``2 alpha``; under train-mode BatchNorm (one batch's
statistics couple all its examples) and through the weights into later batches such flips
spread, so after an epoch the paper's arithmetic and ncscope's differ by far more than an ulp.
The equality check therefore also trains the *aligned* reference -- the same loop, still with
``loss.backward()`` into every parameter at every attack step, but with ncscope's operation
order -- and reports ``max |Δw|`` against both, plus ``max |Δ state|`` (parameters and
buffers; with ``--exact`` also against ncscope's ``paper_exact=True``).

ncscope runs through :class:`ncscope.train.Trainer` (``train_s`` of its timings: the epoch only,
including the spool of the perturbed batches that tracking reads; the tracking after the epoch
is not timed). Each (data set, mode) runs ``--reps`` times interleaved (ncscope, reference,
reference, ncscope, ...); the ratio is of the medians. On conv nets ncscope also runs with
``channels_last=True`` (same loop, channels-last kernels; not bit-identical, so it is timed
only). One extra epoch of each side runs under cProfile for the split of its time.

Usage::

    python benchmarks/bench_reference_loop.py                 # --quick: digits + FMNIST 1000
    python benchmarks/bench_reference_loop.py --n-fmnist 5000 --reps 3    # the full sizes
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import datetime as dt
import platform
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from _machine import cpu_name
from ncscope.train import TrainConfig
from ncscope.train.distributed import DistInfo, derive_seed, epoch_batches
from ncscope.train.schedules import lr_at
from ncscope.train.tracking import PURPOSE_TRAIN_ATTACK, fetch_batch
from ncscope.train.trainer import Trainer

EPS, ALPHA, STEPS, BATCH, LR, BETA = 0.1, 0.025, 10, 128, 0.05, 6.0
SETUPS = {"digits": ("digits", "bn_mlp"), "fashion_mnist": ("fashion_mnist", "small_cnn")}


# ----------------------------------------------------------------------------- reference loop
def _fwd(model: nn.Module, x: Tensor) -> Tensor:
    """One forward pass (a function so that the profile can name it)."""
    return model(x)


def _bwd(loss: Tensor) -> None:
    """One ``loss.backward()`` (every parameter's gradient, and the input's when it needs one)."""
    loss.backward()


def _attack_pgd(model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator,
                aligned: bool = False) -> Tensor:
    """``attack_pgd`` of Rice et al. 2020 (used by Su et al. 2024), one restart, l_inf; returns
    ``delta``. ``aligned``: the same steps written on ``x_adv`` in ncscope's operation order
    (start ``clip(x + u)``, step ``clip_[lo, hi](x_adv + alpha sign g)``), returns ``x_adv``."""
    if aligned:
        lo, hi = (x - EPS).clamp(min=0.0), (x + EPS).clamp(max=1.0)
        x_adv = (x + torch.empty_like(x).uniform_(-EPS, EPS, generator=gen)).clamp(0.0, 1.0)
        for _ in range(STEPS):
            x_adv.requires_grad_(True)
            _bwd(F.cross_entropy(_fwd(model, x_adv), y))  # parameters' .grad filled as well
            x_adv = torch.add(x_adv.detach(), torch.sign(x_adv.grad), alpha=ALPHA).clamp(lo, hi)
        _fwd(model, x_adv)  # the selection forward (one restart: it keeps x_adv)
        return x_adv
    max_loss = torch.zeros(y.shape[0])
    max_delta = torch.zeros_like(x)
    delta = torch.empty_like(x).uniform_(-EPS, EPS, generator=gen)  # delta.uniform_(-eps, eps)
    delta = torch.min(torch.max(delta, -x), 1 - x)  # clamp(delta, lower - X, upper - X)
    delta.requires_grad = True
    for _ in range(STEPS):
        output = _fwd(model, x + delta)
        loss = F.cross_entropy(output, y)
        _bwd(loss)  # parameters' .grad filled as well (zeroed by the optimiser later)
        grad = delta.grad.detach()
        d = torch.clamp(delta + ALPHA * torch.sign(grad), min=-EPS, max=EPS)
        d = torch.min(torch.max(d, -x), 1 - x)
        delta.data = d.detach()
        delta.grad.zero_()
    all_loss = F.cross_entropy(_fwd(model, x + delta), y, reduction="none")
    better = all_loss >= max_loss
    max_delta[better] = delta.detach()[better]
    return max_delta


def _trades_attack(model: nn.Module, x: Tensor, gen: torch.Generator) -> Tensor:
    """The inner maximisation of the official ``trades_loss`` (Zhang et al. 2019), l_inf."""
    kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    x_adv = x.detach() + 0.001 * torch.empty_like(x).normal_(generator=gen)
    for _ in range(STEPS):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = kl(F.log_softmax(_fwd(model, x_adv), dim=1),
                         F.softmax(_fwd(model, x), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + ALPHA * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    return torch.clamp(x_adv, 0.0, 1.0).detach()


def ref_step(mode: str, model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
             gen: torch.Generator, aligned: bool = False) -> Tensor:
    """One batch of the reference loop; returns the loss. ``aligned``: the same function in
    ncscope's float operation order (AT: the x-space projection; TRADES: ``f(x)`` computed
    once for both terms, the KL divided by the batch size), for the equality check."""
    if mode == "st":
        loss = F.cross_entropy(_fwd(model, x), y)
        opt.zero_grad()
        _bwd(loss)
        opt.step()
        return loss
    if mode == "at":
        if aligned:
            x_adv = _attack_pgd(model, x, y, gen, aligned=True)
        else:
            delta = _attack_pgd(model, x, y, gen)
            x_adv = torch.clamp(x + delta[: x.size(0)], min=0.0, max=1.0)
        loss = F.cross_entropy(_fwd(model, x_adv), y)
        opt.zero_grad()
        _bwd(loss)
        opt.step()
        _fwd(model, x)  # the logged clean output (graph built, no backward), as in the code
        return loss
    x_adv = _trades_attack(model, x, gen)
    kl = nn.KLDivLoss(reduction="sum")
    opt.zero_grad()
    logits = _fwd(model, x)
    loss_natural = F.cross_entropy(logits, y)
    if aligned:
        adv = _fwd(model, x_adv)
        kl_sum = kl(F.log_softmax(adv, dim=1), F.softmax(logits, dim=1))
        loss = loss_natural + BETA * (kl_sum / x.size(0))
        _bwd(loss)
        opt.step()
        return loss
    loss_robust = (1.0 / x.size(0)) * kl(F.log_softmax(_fwd(model, x_adv), dim=1),
                                         F.softmax(_fwd(model, x), dim=1))
    loss = loss_natural + BETA * loss_robust
    _bwd(loss)
    opt.step()
    return loss


def ref_epoch(mode: str, model: nn.Module, data: Any, cfg: TrainConfig,
              aligned: bool = False) -> float:
    """One epoch (epoch 1) of the reference loop; returns its seconds."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    gen = torch.Generator()
    gen.manual_seed(derive_seed(cfg.seed, 1, 0, PURPOSE_TRAIN_ATTACK))
    batches = epoch_batches(len(data), cfg.batch_size, 0, cfg.seed, DistInfo())
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # as the trainer on CPU
    t0 = time.perf_counter()
    try:
        model.train()
        for i, (idx, _) in enumerate(batches):
            lr = lr_at(cfg.schedule, 0, i, len(batches), cfg.epochs, cfg.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = fetch_batch(data, idx)
            ref_step(mode, model, opt, x, y, gen, aligned)
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=True)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- ncscope side
def config(mode: str, *, paper_exact: bool = False, **extra: Any) -> TrainConfig:
    """One epoch of ``mode``; tracking is cheap (training subset, no test set, no fresh
    attack) and untimed; the perturbed batches are spooled as in any tracked epoch."""
    return TrainConfig.from_dict({
        "mode": mode, "epochs": 1, "lr": LR, "batch_size": BATCH, "eps": EPS, "alpha": ALPHA,
        "steps": STEPS, "threads": 1, "progress": False, "checkpoint_every": 0,
        "save_model": False, "track_test": False, "track_test_attack": False,
        "track_fresh_attack": False, "track_subset": 2, "device": "cpu",
        "paper_exact": paper_exact, **extra,
    })


def ncscope_epoch(model: nn.Module, data: Any, cfg: TrainConfig) -> float:
    """One ncscope epoch through the Trainer; returns its ``train_s``."""
    trainer = Trainer(model, data, None, cfg)
    trainer.fit()
    return trainer.timings[0]["train_s"]


def max_diff(a: nn.Module, b: nn.Module, buffers: bool) -> float:
    """Largest absolute difference of the parameters (and buffers) of two models."""
    sa, sb = a.state_dict(), b.state_dict()
    names = {n for n, _ in a.named_parameters()}
    keys = [k for k in sa if buffers or k in names]
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in keys
               if sa[k].is_floating_point())


# ----------------------------------------------------------------------------- profiles
NC_PARTS = {  # share name -> (file fragment, function name); cumulative times
    "attack": ("ncscope/attacks/base.py", "__call__"),
    "attack fwd": ("ncscope/attacks/gradient.py", "_forward"),
    "attack bwd": ("ncscope/attacks/gradient.py", "_input_grad"),
    "step (attack + fwd)": ("ncscope/train/modes.py", "step"),
    "backward": ("torch/_tensor.py", "backward"),
    "optimizer": ("torch/optim/sgd.py", "step"),
    "zero_grad": ("torch/optim/optimizer.py", "zero_grad"),
    "data": ("ncscope/train/tracking.py", "fetch_batch"),
    "spool": ("ncscope/collapse/spool.py", "append"),
    "epoch": ("ncscope/train/trainer.py", "_train_epoch"),
}
REF_PARTS = {
    "attack": ("bench_reference_loop.py", "_attack_pgd"),
    "trades attack": ("bench_reference_loop.py", "_trades_attack"),
    "fwd": ("bench_reference_loop.py", "_fwd"),
    "bwd": ("bench_reference_loop.py", "_bwd"),
    "optimizer": ("torch/optim/sgd.py", "step"),
    "zero_grad": ("torch/optim/optimizer.py", "zero_grad"),
    "data": ("ncscope/train/tracking.py", "fetch_batch"),
    "epoch": ("bench_reference_loop.py", "ref_epoch"),
}


def profile(fn: Callable[[], Any], parts: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Cumulative seconds of the named functions while ``fn`` runs under cProfile (a function
    that calls itself, e.g. ``Module.__call__``, is counted once per outermost call)."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out = dict.fromkeys(parts, 0.0)
    for (file, _, func), (_, _, _, cum, _) in stats.items():
        for name, (frag, fname) in parts.items():
            if func == fname and file.replace("\\", "/").endswith(frag):
                out[name] += cum
    return out


def nc_shares(p: dict[str, float], mode: str) -> str:
    """The ncscope split as text (shares of its epoch)."""
    e = p["epoch"] or 1.0
    train_fwd = p["step (attack + fwd)"] - p["attack"]
    atk_rest = p["attack"] - p["attack fwd"] - p["attack bwd"]
    rest = e - p["step (attack + fwd)"] - p["backward"] - p["optimizer"] - p["zero_grad"] \
        - p["data"] - p["spool"]
    parts = ([("attack fwd", p["attack fwd"]), ("attack bwd (input only)", p["attack bwd"]),
              ("attack other", atk_rest)] if mode != "st" else [])
    parts += [("train fwd", train_fwd), ("train bwd", p["backward"]),
              ("optimizer", p["optimizer"] + p["zero_grad"]), ("data", p["data"]),
              ("spool", p["spool"]), ("other", rest)]
    return ", ".join(f"{n} {v / e:.0%}" for n, v in parts)


def ref_shares(p: dict[str, float], mode: str) -> str:
    """The reference split as text (shares of its epoch)."""
    e = p["epoch"] or 1.0
    attack = p["attack"] + p["trades attack"]
    # _fwd/_bwd inside the attack are in the attack's time; estimate the training part as the
    # total minus the attack's share of each (the profile attributes calls, not contexts).
    rest = e - attack - p["optimizer"] - p["zero_grad"] - p["data"]
    return (f"attack {attack / e:.0%} (all fwd {p['fwd'] / e:.0%}, all bwd {p['bwd'] / e:.0%}), "
            f"train fwd+bwd+other {rest / e:.0%}, optimizer "
            f"{(p['optimizer'] + p['zero_grad']) / e:.0%}, data {p['data'] / e:.0%}")


def pass_costs(model0: nn.Module, data: Any, reps: int = 7) -> dict[str, float]:
    """Median seconds of one train-mode forward, one input-only backward and one backward into
    the input and every parameter, on one training batch."""
    model = copy.deepcopy(model0).train()
    x, y = fetch_batch(data, list(range(min(BATCH, len(data)))))
    out: dict[str, list[float]] = {"fwd": [], "bwd input": [], "bwd all": []}
    params = list(model.parameters())
    for _ in range(reps):
        xr = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(xr), y)
        out["fwd"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loss.backward()
        out["bwd all"].append(time.perf_counter() - t0)
        for p in params:
            p.requires_grad_(False)
        xr = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xr), y)
        t0 = time.perf_counter()
        torch.autograd.grad(loss, xr)
        out["bwd input"].append(time.perf_counter() - t0)
        for p in params:
            p.requires_grad_(True)
            p.grad = None
    return {k: statistics.median(v) for k, v in out.items()}


def predicted(mode: str, c: dict[str, float]) -> float:
    """Reference / ncscope time predicted from the pass costs alone (PGD-10; AT: the reference's
    10 full backwards, selection forward and clean forward with graph, against 10 input-only
    backwards and a no-grad clean forward; TRADES: 2 forwards + 1 input backward per step
    and 3 training forwards, against 1 + 1 per step, one clean forward and 2 training
    forwards)."""
    f, bi, ba = c["fwd"], c["bwd input"], c["bwd all"]
    if mode == "at":
        return (STEPS * (f + ba) + f + f + ba + f) / (STEPS * (f + bi) + f + ba + f)
    if mode == "trades":
        return (STEPS * (2 * f + bi) + 3 * f + ba) / (STEPS * (f + bi) + f + 2 * f + ba)
    return 1.0


# ----------------------------------------------------------------------------- driver
def load(ds: str, n: int | None) -> tuple[Any, nn.Module]:
    """The training set (first ``n`` stratified samples for Fashion-MNIST) and a seeded model."""
    dataset, model_name = SETUPS[ds]
    data_cfg: dict[str, Any] = {"dataset": dataset}
    if n is not None:
        data_cfg["n_train"] = n
    cfg = TrainConfig.from_dict({"data": data_cfg, "model": {"name": model_name}})
    data = cfg.data.load("train")
    torch.manual_seed(0)
    model = cfg.model.build(getattr(data, "info", None) or dataset)
    return data, model


def run(ds: str, n: int | None, mode: str, reps: int, exact: bool) -> dict[str, Any]:
    """Time, compare and profile one (data set, mode)."""
    data, model0 = load(ds, n)
    cfg = config(mode)
    conv = any(isinstance(m, nn.Conv2d) for m in model0.modules())
    t_nc: list[float] = []
    t_ref: list[float] = []
    t_cl: list[float] = []
    m_nc = m_ref = model0
    for r in range(reps):
        order = ["nc", "ref"] + (["cl"] if conv else [])
        for side in (order if r % 2 == 0 else order[::-1]):
            m = copy.deepcopy(model0)
            if side == "nc":
                t_nc.append(ncscope_epoch(m, data, cfg))
                m_nc = m
            elif side == "cl":  # the channels-last option (not bit-identical: other kernels)
                t_cl.append(ncscope_epoch(m, data, config(mode, channels_last=True)))
            else:
                t_ref.append(ref_epoch(mode, m, data, cfg))
                m_ref = m
    out: dict[str, Any] = {
        "n": len(data), "nc": statistics.median(t_nc), "ref": statistics.median(t_ref),
        "cl": statistics.median(t_cl) if t_cl else None,
        "dw": max_diff(m_nc, m_ref, buffers=False),
    }
    m_al = copy.deepcopy(model0)
    ref_epoch(mode, m_al, data, cfg, aligned=True)
    out["dw_aligned"] = max_diff(m_nc, m_al, buffers=False)
    out["dstate"] = max_diff(m_nc, m_al, buffers=True)
    if exact and mode == "at":  # the paper's selection forward: BN sees the same batches
        m = copy.deepcopy(model0)
        ncscope_epoch(m, data, config(mode, paper_exact=True))
        out["dstate_exact"] = max_diff(m, m_al, True)
    torch.set_num_threads(1)
    out["costs"] = pass_costs(model0, data)
    out["predicted"] = predicted(mode, out["costs"])
    out["prof_nc"] = nc_shares(profile(
        lambda: ncscope_epoch(copy.deepcopy(model0), data, cfg), NC_PARTS), mode)
    out["prof_ref"] = ref_shares(profile(
        lambda: ref_epoch(mode, copy.deepcopy(model0), data, cfg), REF_PARTS), mode)
    return out


def main() -> None:
    """Run the grid and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--modes", nargs="+", default=["st", "at", "trades"])
    parser.add_argument("--n-fmnist", type=int, default=1000,
                        help="Fashion-MNIST training images (quick default 1000; full 5000)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--exact", action="store_true",
                        help="also compare every buffer against ncscope's paper_exact=True AT")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{dt.date.today()}, {cpu_name()}, {platform.machine()}, torch {torch.__version__}, "
          f"1 thread; PGD-10 l_inf eps {EPS}, alpha {ALPHA}, batch {BATCH}, "
          f"median of {args.reps} interleaved epochs")
    rows = []
    for ds in args.datasets:
        for mode in args.modes:
            r = run(ds, args.n_fmnist if ds == "fashion_mnist" else None, mode, args.reps,
                    args.exact)
            rows.append((ds, mode, r))
            cl = "" if r["cl"] is None else (f", ncscope channels_last {r['cl']:.2f} s "
                                             f"({r['ref'] / r['cl']:.2f}x)")
            print(f"{ds} {mode}: ncscope {r['nc']:.2f} s, reference {r['ref']:.2f} s, "
                  f"ratio {r['ref'] / r['nc']:.2f}x{cl}", flush=True)
    print("\n| data | model | n | mode | reference s | ncscope s | speed-up | ncscope "
          "channels_last s (speed-up) | max abs dw, aligned reference | max abs dw, paper's "
          "arithmetic | max abs d(state), aligned |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for ds, mode, r in rows:
        exact = f" (paper_exact: {r['dstate_exact']:.1e})" if "dstate_exact" in r else ""
        cl = "—" if r["cl"] is None else f"{r['cl']:.2f} (**{r['ref'] / r['cl']:.2f}x**)"
        print(f"| {ds} | {SETUPS[ds][1]} | {r['n']} | {mode} | {r['ref']:.2f} | {r['nc']:.2f} | "
              f"**{r['ref'] / r['nc']:.2f}x** | {cl} | {r['dw_aligned']:.1e} | {r['dw']:.1e} | "
              f"{r['dstate']:.1e}{exact} |")
    print("\nPass costs on one training batch (ms; train mode) and the ratio they predict:\n")
    print("| data | mode | forward | backward, input only | backward, input + parameters | "
          "predicted speed-up | measured |")
    print("|---|---|---|---|---|---|---|")
    for ds, mode, r in rows:
        c = r["costs"]
        print(f"| {ds} | {mode} | {1e3 * c['fwd']:.1f} | {1e3 * c['bwd input']:.1f} | "
              f"{1e3 * c['bwd all']:.1f} | {r['predicted']:.2f}x | {r['ref'] / r['nc']:.2f}x |")
    print("\nWhere the time goes (cProfile, shares of one epoch):\n")
    for ds, mode, r in rows:
        print(f"* {ds} {mode}, ncscope: {r['prof_nc']}")
        print(f"* {ds} {mode}, reference: {r['prof_ref']}")


if __name__ == "__main__":
    main()
