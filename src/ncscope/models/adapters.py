"""Adapters for foreign models and data: model outputs -> logits, user data -> tensors.

**Outputs.** :func:`logits_of` is the one place where ncscope reads logits from what a model
returns: a tensor, a tuple/list whose first element is the logits (e.g. ``(logits,
features)``), a dict with key ``"logits"`` or an object with a ``.logits`` tensor (the
Hugging Face ``ModelOutput`` convention). Anything else is a one-line ``TypeError`` naming the
type and the fix. :func:`adapt_output` installs a user function ``output -> logits`` for the
exotic cases, as a forward hook on the model (module names unchanged).

**Data.** Images are float32 pixels ``(N, C, H, W)`` in [0, 1]; labels int64. :func:`as_images`
converts numpy arrays to float32 tensors and refuses integer pixels; :func:`as_dataset` turns
``(X, y)`` pairs (tensors or arrays) and DataLoaders into map-style data sets;
:func:`collate_pairs` batches ``(x, y)`` items. :func:`probe` runs one eval-mode forward on a
small batch before any work, so that a batch the model cannot take (a missing channel
dimension, flattened images, a dtype other than the model's) is a one-line error naming the
shape/dtype and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

__all__ = [
    "OutputFn",
    "adapt_output",
    "as_dataset",
    "as_images",
    "as_labels",
    "as_pair",
    "collate_pairs",
    "logits_of",
    "probe",
]

#: A user function reading logits from a model's output (``output -> (B, K) tensor``).
OutputFn = Callable[[Any], Tensor]

_FIX = ("return a tensor, a tuple/list whose first element is the logits, a dict with key "
        "'logits' or an object with a .logits tensor, or pass output=<function output -> "
        "logits>")


def logits_of(output: Any, output_fn: OutputFn | None = None) -> Tensor:
    """The logits in a model's ``output`` (see the module docstring); ``output_fn`` overrides
    the automatic reading."""
    if output_fn is not None:
        got = output_fn(output)
        if not isinstance(got, Tensor):
            raise TypeError(f"the output function returned {type(got).__name__}, not a logits "
                            "tensor")
        return got
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        if isinstance(output.get("logits"), Tensor):
            return output["logits"]
        keys = ", ".join(repr(k) for k in list(output)[:6])
        raise TypeError(f"the model returned a {type(output).__name__} without a 'logits' "
                        f"tensor (keys: {keys}); {_FIX}")
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise TypeError(f"the model returned {type(output).__name__}, not logits; {_FIX}")


@contextmanager
def adapt_output(model: nn.Module, output: OutputFn | None) -> Iterator[nn.Module]:
    """Within the block, ``model(x)`` returns ``output(model's output)`` (a forward hook on the
    model; removed on exit). ``output=None`` changes nothing."""
    if output is None:
        yield model
        return
    if not callable(output):
        raise TypeError(f"output must be a function output -> logits, got "
                        f"{type(output).__name__}")
    handle = model.register_forward_hook(lambda _m, _i, out: logits_of(out, output))
    try:
        yield model
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------- data
def as_images(x: Any, what: str = "images") -> Tensor:
    """``x`` as a tensor of pixels: numpy arrays become float32 tensors; integer or boolean
    pixels are refused (ncscope works with float pixels in [0, 1]); tensors keep their dtype
    (a dtype the model cannot take is caught by :func:`probe`)."""
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating)):
            raise TypeError(f"{what} have dtype {x.dtype}; ncscope needs float pixels in "
                            "[0, 1]: pass x.astype('float32') / 255 for 8-bit images")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        raise TypeError(f"{what} have dtype {t.dtype}; ncscope needs float pixels in [0, 1]: "
                        "pass x.float() / 255 for 8-bit images")
    return t


def as_labels(y: Any) -> Tensor:
    """Class labels as an int64 tensor (from a tensor, an array or a list)."""
    t = torch.as_tensor(np.asarray(y) if isinstance(y, list | tuple) else y)
    if t.is_floating_point() and not bool((t == t.round()).all()):
        raise TypeError("labels must be class indices 0..K-1, got non-integer values")
    return t.long()


def as_pair(data: Any) -> tuple[Tensor, Tensor] | None:
    """``(images, labels)`` when ``data`` is a 2-tuple/list of tensors or arrays (converted by
    :func:`as_images` / :func:`as_labels`, lengths checked); else ``None``."""
    if not (isinstance(data, tuple | list) and len(data) == 2
            and isinstance(data[0], Tensor | np.ndarray)):
        return None
    x, y = as_images(data[0]), as_labels(data[1])
    if y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"images and labels differ in length: images {tuple(x.shape)}, "
                         f"labels {tuple(y.shape)}")
    return x, y


def collate_pairs(items: Sequence[Any]) -> tuple[Tensor, Tensor]:
    """Stack ``(x, y)`` items of a map-style data set into one batch (numpy images become
    float32, labels int64)."""
    for it in items[:1]:
        if not (isinstance(it, tuple | list) and len(it) >= 2):
            raise TypeError(f"data set items must be (image, label) pairs; got "
                            f"{type(it).__name__}")
    xs = torch.stack([as_images(it[0]) for it in items])
    return xs, as_labels([int(it[1]) for it in items])


def as_dataset(data: Any) -> Dataset:
    """A map-style data set of ``(image, label)`` items: an ncscope ``ImageDataset``, a
    ``TensorDataset`` or any map-style ``Dataset`` as it is; ``(X, y)`` (tensors or numpy
    arrays) as a ``TensorDataset``; a ``DataLoader`` as its data set (batching and order are
    the caller's). Anything else is a one-line ``TypeError``."""
    pair = as_pair(data)
    if pair is not None:
        return TensorDataset(*pair)
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        if not hasattr(data, "__len__"):
            raise TypeError(f"the data set {type(data).__name__} has no len(); give a map-style "
                            "data set or (images, labels)")
        return data
    raise TypeError("data must be (images, labels) as tensors or numpy arrays, a TensorDataset "
                    f"/ ImageDataset / map-style Dataset or a DataLoader; got "
                    f"{type(data).__name__}")


# ---------------------------------------------------------------------------------- probe
def probe(model: nn.Module, x: Tensor, *, watch: Sequence[nn.Module] = (),
          output: OutputFn | None = None) -> tuple[Tensor, dict[nn.Module, Tensor]]:
    """One eval-mode forward of ``model`` on the small batch ``x`` under ``no_grad`` (module
    modes restored); returns the logits and the last output of each ``watch`` module.

    A forward that fails is a one-line error naming the batch's shape and dtype and the fix.
    """
    seen: dict[nn.Module, Tensor] = {}

    def keep(module: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            seen.pop(module, None)  # keep the order of the last calls
            seen[module] = out.detach()

    handles = [m.register_forward_hook(keep) for m in watch]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            try:
                out = model(x)
            except (RuntimeError, TypeError, ValueError, IndexError) as exc:
                raise _input_error(model, x, exc) from None
    finally:
        for h in handles:
            h.remove()
        for m, was in modes:
            m.training = was
    logits = logits_of(out, output)
    if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        raise TypeError(f"the model must return logits of shape (B, K) = ({x.shape[0]}, K); "
                        f"got {tuple(logits.shape)} for a batch of shape {tuple(x.shape)}")
    return logits, seen


def _input_error(model: nn.Module, x: Tensor, exc: Exception) -> Exception:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    what = f"the model cannot take a batch of shape {tuple(x.shape)} and dtype {x.dtype}"
    param = next(model.parameters(), None)
    expected = getattr(model, "input_shape", None)
    if param is not None and param.is_floating_point() and x.dtype != param.dtype:
        return TypeError(f"{what} ({first}); convert the images to the model's dtype "
                         f"(x.to({param.dtype})) or the model to {x.dtype}")
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        shape = ", ".join(str(int(s)) for s in expected)
        fix = f"the model expects (N, {shape}) images: x.reshape(-1, {shape})"
    elif x.ndim == 3:
        fix = "images need a channel dimension (N, C, H, W): pass x[:, None] for grey images"
    elif x.ndim == 2:
        fix = "flattened images? pass them as (N, C, H, W), e.g. x.reshape(len(x), C, H, W)"
    else:
        fix = "give images shaped and typed as the model expects: (N, C, H, W) float pixels"
    return ValueError(f"{what} ({first}); {fix}")
