"""Training settings: :class:`TrainSettings`, validated before any work starts.

Defaults are the paper's recipe (Su, Zhang, Tsilivis, Kempe, TMLR 2024, experimental setup):
SGD with momentum 0.9, ``lr_max`` 0.1, weight decay 5e-4 on *all* parameters, batch 128, the
``piecewise`` schedule updated every iteration, 400 epochs, cross-entropy, PGD-10 l_inf
``eps = 8/255``, ``alpha = eps / 4``, one random start, TRADES ``beta = 6``. The small digits
recipe of the su2024 study is :meth:`TrainConfig.digits_recipe`.

Every name (data set, model, mode, loss, schedule, norm, attack mode) is checked in
``__post_init__`` and an unknown one lists the valid ones; numbers out of range (epochs, batch
size, eps, ...) are rejected with a one-line message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncscope.attacks import threat_model
from ncscope.data import UnknownNameError
from ncscope.losses import canonical_loss, make_loss
from ncscope.train.modes import MODES, canonical_mode
from ncscope.train.schedules import canonical_schedule
from ncscope.validation import check_int, check_real

__all__ = [
    "MODES",
    "RESUME_FREE_FIELDS",
    "TRACK_LAYER_CHOICES",
    "TrainSettings",
]

_NORM_ALIASES = {"linf": "linf", "l_inf": "linf", "inf": "linf", "l2": "l2", "l_2": "l2"}
_ATTACK_MODES = ("train", "eval")
#: Shorthands accepted by ``track_layers`` besides an explicit list of layer specs.
TRACK_LAYER_CHOICES: tuple[str, ...] = ("penultimate", "all")
_DEVICES = ("auto", "cpu", "cuda")
#: Values of ``TrainSettings.precision`` (``bf16``: autocast of the training passes).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
# Fields that may change between a run and its resumption (they do not affect the numbers).
RESUME_FREE_FIELDS = frozenset(
    {"progress", "threads", "out_dir", "overwrite", "spool_dir", "device"}
)


def _choice(what: str, value: Any, valid: Sequence[str], aliases: Mapping[str, str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string; valid values: {', '.join(valid)}")
    key = value.strip().lower().replace("-", "_")
    key = aliases.get(key, key)
    if key not in valid:
        raise UnknownNameError(f"unknown {what} {value!r}; valid values: {', '.join(valid)}")
    return key


def _int(what: str, value: Any, low: int, high: int | None = None) -> int:
    return check_int("train", what, value, low, high)


def _real(what: str, value: Any, low: float, high: float | None = None, *,
          strict_low: bool = False, strict_high: bool = False) -> float:
    return check_real("train", what, value, low, high, strict_low, strict_high)


def _epoch_list(what: str, value: Any, epochs: int) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{what} must be a list of epoch numbers (1..epochs), got {value!r}")
    out = sorted({_int(f"{what} entry", v, 1) for v in value})
    late = [e for e in out if e > epochs]
    if late:
        raise ValueError(f"{what} has epochs {late} beyond epochs={epochs} (epochs are 1-based)")
    return out


@dataclass
class TrainSettings:
    """How a model is trained (everything but the data and the model); validated in
    ``__post_init__`` before any work. :class:`TrainConfig` adds the ``data`` and ``model``
    sections; a study's ``train`` section is a TrainSettings.

    Epoch numbers in this config and in the outputs are **1-based counts of completed
    epochs** (``track_epochs=[1, 10]`` measures after the first and the tenth epoch).

    Optimisation (Su et al. 2024, experimental setup):
        mode: ``"st"`` (CE on clean), ``"at"`` (CE on PGD examples only, Madry et al. 2018),
            ``"trades"`` (``CE(f(x), y) + trades_beta * KL(f(x) || f(x'))``, Zhang et al. 2019),
            or any mode added with :func:`ncscope.train.modes.register_mode`.
        loss: name in :data:`ncscope.losses.LOSSES` (``ce``, ``ls``, ``fl``, ``mse`` or a
            registered one; ``loss_kwargs`` are passed to it and checked here); for TRADES it
            is the natural term.
        epochs, batch_size, lr (``lr_max``), momentum, weight_decay (all parameters),
        schedule: ``"piecewise"`` | ``"cosine"`` | ``"constant"`` (per-iteration updates).
        seed: model initialisation, batch order and attack noise all derive from it.

    Attack (training-time; Madry et al. 2018, Zhang et al. 2019):
        eps, alpha (``None``: the threat-model table of :mod:`ncscope.attacks`, ℓ∞ ``eps / 4``),
        steps, norm (``"linf"`` | ``"l2"``), random_start,
        restarts: PGD settings, shared by the TRADES inner maximisation (which ignores
        restarts and random_start unless ``random_start=False``, which zeroes its
        ``0.001 * N(0, I)`` start).
        attack_mode: model mode during the attack; ``None`` = ``"train"`` for AT (the paper's
            code, inherited from Rice et al. 2020: BN uses and updates batch statistics) and
            ``"eval"`` for TRADES (as the official TRADES code).
        fast_attacks: run the eval-mode attacks (the tracking PGD; the training attack when
            ``attack_mode`` is ``"eval"``, e.g. TRADES) with ``fast=True``: on the model's
            folded attack twin (:mod:`ncscope.attacks.fast`; same function, float rounding
            differs). Train-mode attacks (the paper's AT) always run on the model itself.
        trades_beta: TRADES weight (6.0 hard-coded in the paper's code).
        bn_quirk: TRADES only. ``True`` reproduces the official code: its attack calls
            ``model.eval()`` and the loop never switches back, so the whole TRADES training runs
            with BatchNorm in eval mode (running statistics frozen at their initial 0/1, BN a
            learnable affine map). ``False`` (canonical TRADES) switches back to train mode for
            the update.
        paper_exact: AT only. The training PGD also runs the reference code's final selection
            forward with one restart (``PGD(paper_exact=True)``): in train mode BatchNorm then
            sees ``steps + 1`` adversarial batches per attack, as in the paper's code
            (default ``False``: ``steps``; the perturbation is the same); and the logged clean
            forward (``clean_forward``) runs after the optimiser step, as there (default:
            before it; only BatchNorm's running statistics and the logged clean accuracy
            differ).
        clean_forward: AT only. Run the paper's extra clean forward pass in train mode (no
            backward) after the adversarial one, for the logged clean training accuracy; as in
            the official code it also updates BN running statistics with clean batches.

    Tracking (Su et al. 2024, §3 protocol), all in eval mode on the training set:
        track_every / track_epochs: measure after every k-th epoch, or after the listed
            epochs (the last epoch is always measured).
        track_layers: ``"penultimate"`` (``classifier:in``), ``"all"`` (the model's
            ``default_taps`` plus the penultimate features) or a list of layer specs.
        track_perturbed: AT/TRADES: NC on the perturbed batches generated *during* the epoch
            (streamed to a scratch file, measured with the epoch's final weights).
        track_init: also measure the freshly initialised model before training (rows with
            ``epoch = 0``; no training-time perturbations exist yet). Only on a fresh start.
        track_fresh_attack: NC on a fresh eval-mode PGD of the training set after the epoch;
            ``None`` = on for ST, off for AT/TRADES.
        track_subset: samples per class of the stratified tracking subset of the training and
            test sets (clean passes and fresh attacks; fixed by ``data.seed``); default 10, which
            keeps an ST tracking step at ~0.4× a training epoch on the Fashion-MNIST preset
            (docs/benchmarks.md gives the subset's measured error: NC1 within ~35–75 %,
            accuracies within ~0.01–0.02 of the full sets); ``None``: the full sets (exact
            numbers, ~30× an epoch there). The training-time perturbations are always measured
            in full.
        track_test / track_test_attack: clean and PGD test accuracy (+ NCC test accuracy with
            the clean training means).
        eval_eps / eval_alpha / eval_steps: the tracking PGD (``None``: training values).
        eval_batch_size: batch size of the measurement passes (``None``: ``batch_size``).
        track_ntk: kernel dynamics (Tsilivis & Kempe 2022, §5): samples per class of a fixed,
            stratified probe batch on which the empirical NTK is computed after every tracked
            epoch, clean and under the tracking PGD (:class:`ncscope.ntk.KernelProbe`: distance
            to the first and previous kernel, top-K spectral mass, class alignment; rows of
            source ``ntk``); ``None``: off. Cost: one Jacobian per probe sample and logit.
        track_ntk_mode: ``"trace"`` (n × n, the sum over logits; default) or ``"full"``
            (nK × nK) empirical NTK.

    Output and runtime:
        out_dir: run folder (``None``: nothing is written, results are returned only).
        overwrite: allow a fresh run in a folder that already holds results.
        checkpoint_every: write a checkpoint every k epochs (and always at the end; ``0``: only
            at the end); only the newest one and those of ``keep_epochs`` are kept.
        save_model: also write the final weights to ``model.pt``.
        threads: ``torch.set_num_threads`` for the run (``None``: leave as is).
        progress: tqdm bars (only when stderr is a terminal).
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"`` (or ``"cuda:1"``).
        deterministic: ``torch.use_deterministic_algorithms`` during the run (``None``: on for
            CPU, off for CUDA).
        precision: ``"fp32"`` (default) or ``"bf16"``: the training forward/backward passes and
            the training attack under ``torch.autocast(bfloat16)``; the tracking passes and all
            NC statistics stay float32 features / float64 sums.
        channels_last: put the model (and each training batch) in channels-last memory format
            (faster convolutions on GPUs and recent CPUs; no effect on MLPs).
        spool_dir: where perturbed-batch scratch files go (``None``: ``out_dir/.spool``, or the
            system temporary folder without ``out_dir``).
    """

    mode: str = "st"
    loss: str = "ce"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 400
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "piecewise"
    seed: int = 0
    # attack
    eps: float = 8 / 255
    alpha: float | None = None
    steps: int = 10
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1
    attack_mode: str | None = None
    fast_attacks: bool = False
    trades_beta: float = 6.0
    bn_quirk: bool = False
    clean_forward: bool = True
    paper_exact: bool = False
    # tracking
    track_every: int = 1
    track_epochs: list[int] | None = None
    track_layers: str | list[str] = "penultimate"
    track_perturbed: bool = True
    track_init: bool = False
    track_fresh_attack: bool | None = None
    track_test: bool = True
    track_test_attack: bool = True
    track_subset: int | None = 10
    eval_eps: float | None = None
    eval_alpha: float | None = None
    eval_steps: int | None = None
    eval_batch_size: int | None = None
    track_ntk: int | None = None
    track_ntk_mode: str = "trace"
    # output / runtime
    out_dir: str | None = None
    overwrite: bool = False
    checkpoint_every: int = 1
    keep_epochs: list[int] = field(default_factory=list)
    save_model: bool = True
    threads: int | None = None
    progress: bool = True
    device: str = "auto"
    deterministic: bool | None = None
    spool_dir: str | None = None
    precision: str = "fp32"
    channels_last: bool = False

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        self.mode = canonical_mode(self.mode)  # any registered mode (ncscope.train.modes)
        self.loss = canonical_loss(self.loss)
        self.schedule = canonical_schedule(self.schedule)
        self.norm = _choice("norm", self.norm, ("linf", "l2"), _NORM_ALIASES)
        if self.attack_mode is not None:
            self.attack_mode = _choice("attack_mode", self.attack_mode, _ATTACK_MODES, {})
        self.epochs = _int("epochs", self.epochs, 1, 1_000_000)
        self.batch_size = _int("batch_size", self.batch_size, 1, 1 << 20)
        self.lr = _real("lr", self.lr, 0.0, 10.0, strict_low=True)
        self.momentum = _real("momentum", self.momentum, 0.0, 1.0, strict_high=True)
        self.weight_decay = _real("weight_decay", self.weight_decay, 0.0, 1.0)
        self.seed = _int("seed", self.seed, 0, 2**63 - 1)
        for name in ("loss_kwargs",):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
            setattr(self, name, dict(value))
        make_loss(self.loss, **self.loss_kwargs)  # bad hyper-parameters fail here, one line
        self.eps = self._eps("eps", self.eps, positive=self.mode != "st")
        self.alpha = (
            None if self.alpha is None else _real("alpha", self.alpha, 0.0, strict_low=True)
        )
        self.steps = _int("steps", self.steps, 1, 100_000)
        self.restarts = _int("restarts", self.restarts, 1, 1000)
        self.trades_beta = _real("trades_beta", self.trades_beta, 0.0, 1e6)
        for name in (
            "random_start",
            "fast_attacks",
            "bn_quirk",
            "clean_forward",
            "paper_exact",
            "track_perturbed",
            "track_test",
            "track_test_attack",
            "overwrite",
            "save_model",
            "progress",
            "channels_last",
        ):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.bn_quirk and self.mode != "trades":
            raise ValueError("bn_quirk=True only applies to mode='trades' (the TRADES BN quirk)")
        if self.track_fresh_attack is not None and not isinstance(self.track_fresh_attack, bool):
            raise TypeError("track_fresh_attack must be True, False or None")
        if self.deterministic is not None and not isinstance(self.deterministic, bool):
            raise TypeError("deterministic must be True, False or None")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not supported; use one of "
                             f"{', '.join(PRECISIONS)}")
        if self.eval_eps is not None:
            self.eval_eps = self._eps("eval_eps", self.eval_eps, positive=False)
        if self.eval_alpha is not None:
            self.eval_alpha = _real("eval_alpha", self.eval_alpha, 0.0, strict_low=True)
        if self.eval_steps is not None:
            self.eval_steps = _int("eval_steps", self.eval_steps, 1, 100_000)
        if self.eval_batch_size is not None:
            self.eval_batch_size = _int("eval_batch_size", self.eval_batch_size, 1, 1 << 20)
        self.track_every = _int("track_every", self.track_every, 1)
        if self.track_ntk is not None:
            self.track_ntk = _int("track_ntk", self.track_ntk, 1, 10_000)
        self.track_ntk_mode = _choice("track_ntk_mode", self.track_ntk_mode, ("trace", "full"),
                                      {})
        if self.track_subset is not None:
            self.track_subset = _int("track_subset", self.track_subset, 1)
        if self.track_epochs is not None:
            self.track_epochs = _epoch_list("track_epochs", self.track_epochs, self.epochs)
        self.track_layers = self._track_layers(self.track_layers)
        self.checkpoint_every = _int("checkpoint_every", self.checkpoint_every, 0)
        self.keep_epochs = _epoch_list("keep_epochs", self.keep_epochs, self.epochs)
        if self.threads is not None:
            self.threads = _int("threads", self.threads, 1, 4096)
        if not isinstance(self.device, str) or not (
            self.device in _DEVICES or self.device.startswith("cuda:")
        ):
            raise UnknownNameError(
                f"unknown device {self.device!r}; valid values: auto, cpu, cuda, cuda:N"
            )
        for name in ("out_dir", "spool_dir"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (str, Path)):
                    raise TypeError(f"{name} must be a path or None, got {value!r}")
                setattr(self, name, str(value))

    def _eps(self, what: str, value: Any, *, positive: bool) -> float:
        high = 1.0 if self.norm == "linf" else 1e4
        hint = " (pixel units; images are in [0, 1], e.g. 8/255)"
        try:
            out = _real(what, value, 0.0, high, strict_low=positive)
        except ValueError as exc:
            extra = (
                "; AT/TRADES need eps > 0 (use mode='st' for clean training)" if positive else ""
            )
            raise ValueError(f"{exc}{hint}{extra}") from None
        return out

    @staticmethod
    def _track_layers(value: Any) -> str | list[str]:
        if isinstance(value, str):
            key = value.strip().lower()
            if key in TRACK_LAYER_CHOICES:
                return key
            return [value]
        if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
            return list(value)
        raise ValueError(
            f"track_layers must be {' or '.join(repr(c) for c in TRACK_LAYER_CHOICES)} or a "
            f"non-empty list of layer specs, got {value!r}"
        )

    # ------------------------------------------------------------------ derived settings
    @property
    def effective_alpha(self) -> float:
        """Training attack step size: ``alpha``, or the threat-model table's rule for the
        mode's attack (:func:`ncscope.attacks.threat_model`; ℓ∞: ``eps / 4``)."""
        if self.alpha is not None:
            return self.alpha
        attack = "trades" if self.mode == "trades" else "pgd"
        return threat_model(self.norm, self.eps, None, self.steps, attack).alpha

    @property
    def effective_attack_mode(self) -> str:
        """Model mode during the training attack (``"train"`` for AT, ``"eval"`` for TRADES)."""
        if self.attack_mode is not None:
            return self.attack_mode
        return "train" if self.mode == "at" else "eval"

    @property
    def fresh_attack(self) -> bool:
        """Whether a fresh eval-mode PGD of the training set is measured after tracked epochs."""
        if self.track_fresh_attack is not None:
            return self.track_fresh_attack
        return self.mode == "st"

    @property
    def eval_attack(self) -> dict[str, Any]:
        """Settings of the tracking PGD (eval mode): eps, alpha, steps, norm."""
        eps = self.eval_eps if self.eval_eps is not None else self.eps
        if self.eval_alpha is not None:
            alpha = self.eval_alpha
        elif self.eval_eps is None and self.alpha is not None:
            alpha = self.alpha
        else:
            alpha = threat_model(self.norm, eps, None, self.steps).alpha
        steps = self.eval_steps if self.eval_steps is not None else self.steps
        return {"eps": eps, "alpha": alpha if alpha > 0 else 1.0, "steps": steps, "norm": self.norm}

    def is_tracked(self, epoch: int) -> bool:
        """Whether tracking runs after (1-based) ``epoch``: listed / every k-th / the last."""
        if epoch == self.epochs:
            return True
        if self.track_epochs is not None:
            return epoch in self.track_epochs
        return epoch % self.track_every == 0

    def is_checkpointed(self, epoch: int) -> bool:
        """Whether a checkpoint is written after (1-based) ``epoch``."""
        if epoch == self.epochs:
            return True
        if epoch in self.keep_epochs:
            return True
        return self.checkpoint_every > 0 and epoch % self.checkpoint_every == 0
