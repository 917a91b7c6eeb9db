"""The model's mode during an attack: train/eval flags, frozen parameters, untouched buffers.

During an attack the model is put in the mode given by ``model_mode`` (``"eval"``: BatchNorm uses
running statistics and Dropout is off; ``"train"``: the adversarial-training protocol of Madry et
al., ICLR 2018, where BatchNorm uses — and updates — the batch statistics), every parameter's
``requires_grad`` is switched off so that gradients are taken with respect to the input only,
and both are restored exactly afterwards, module by module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["MODEL_MODES", "model_state", "preserved_buffers"]

#: Modes an attack may put the model in.
MODEL_MODES: tuple[str, ...] = ("eval", "train")


@contextlib.contextmanager
def model_state(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Put ``model`` in ``mode`` ("eval" | "train") with all parameters frozen; restore after.

    Every module's ``training`` flag and every parameter's ``requires_grad`` flag are recorded
    and restored individually (so mixed-mode models, e.g. frozen BatchNorm, come back exactly as
    they were), also when the body raises.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.train(mode == "train")
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training
        for p, was in flags:
            p.requires_grad_(was)


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Run auxiliary forward passes without side effects on buffers.

    In train mode BatchNorm updates its running statistics on every forward; sanity checks and
    other auxiliary passes must not, so the buffers are copied and written back. A no-op when no
    module is in training mode.
    """
    if not any(m.training for m in model.modules()):
        yield
        return
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)
