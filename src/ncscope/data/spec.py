"""A registry entry of a data set: :class:`DatasetSpec`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from ncscope.data.base import DatasetInfo

__all__ = ["DatasetSpec", "Loader"]

Loader = Callable[..., Dataset]


@dataclass(frozen=True)
class DatasetSpec:
    """Registry entry: static ``info``, a ``loader(root, split, download, **options)``, the valid
    ``splits``, the one-line ``how_to_obtain`` hint, whether files are needed (``needs_root``),
    the folder name under ``$NCSCOPE_DATA_DIR`` (``env_subdir``) and an optional system
    ``default_root``."""

    info: DatasetInfo
    loader: Loader
    splits: tuple[str, ...] = ("train", "test")
    how_to_obtain: str = ""
    needs_root: bool = True
    env_subdir: str = ""
    default_root: Path | None = None
