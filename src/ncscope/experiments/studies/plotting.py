"""Saving a study figure: one PNG (for the report) and one SVG next to it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["save_figure"]


def save_figure(fig: plt.Figure, folder: Path, name: str, *, bbox_tight: bool = False) -> Path:
    """Write ``folder/name.png`` (110 dpi) and ``folder/name.svg``, close ``fig`` and return the
    PNG's path. The layout is ``fig.tight_layout()``, or the saved bounding box cropped to the
    drawn content with ``bbox_tight`` (figures with legends outside the axes)."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"bbox_inches": "tight"} if bbox_tight else {}
    if not bbox_tight:
        fig.tight_layout()
    png = folder / f"{name}.png"
    fig.savefig(png, dpi=110, **extra)
    fig.savefig(folder / f"{name}.svg", **({"dpi": 110} if not bbox_tight else extra))
    plt.close(fig)
    return png
