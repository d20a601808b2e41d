"""Writing figures without a display: the one matplotlib set-up every plot module shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (headless; imported only when a figure is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 120) -> Path:
    """Lay out, write and close ``fig``; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
