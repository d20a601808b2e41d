"""PNG figures shared by the benchmarks and the comparison of several runs.

`plot_summaries` draws any benchmark's summary rows (one per model): numeric columns (lengths)
as lines over a log2 length axis, named columns (buckets, tasks) as grouped bars; ``avg`` is
left out of the drawing (it is in the tables). `heatmap` draws a benchmark's grid (passkey's
length x depth, LongBench-E's dataset x bucket). A benchmark's own figures are declared in its
folder (`dprope.eval.benchmark.Benchmark.figures`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from dprope.eval.benchmark import Display
from dprope.figures import pyplot, save_figure


def _numeric(columns: list[str]) -> bool:
    return bool(columns) and all(c.isdigit() for c in columns)


def plot_summaries(rows: Mapping[str, Mapping[str, float]], display: Display, path: Path) -> Path:
    """Lines (length columns) or grouped bars (named columns) of several models' summaries."""
    plt = pyplot()
    columns = list(dict.fromkeys(c for row in rows.values() for c in row if c != "avg"))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if _numeric(columns):
        xs = sorted(columns, key=int)
        for label, row in rows.items():
            points = [
                (int(c), row[c]) for c in xs if c in row and row[c] is not None and math.isfinite(row[c])
            ]
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks([int(c) for c in xs], labels=xs, rotation=30)
        ax.set_xlabel("length (tokens)")
        if display.log_scale:
            ax.set_yscale("log")
    else:
        width = 0.8 / max(1, len(rows))
        for k, (label, row) in enumerate(rows.items()):
            values = [row.get(c) if row.get(c) is not None else float("nan") for c in columns]
            ax.bar(
                [i + (k - (len(rows) - 1) / 2) * width for i in range(len(columns))],
                values,
                width,
                label=label,
            )
        ax.set_xticks(range(len(columns)), labels=columns, rotation=30 if len(columns) > 4 else 0)
    if display.percent:
        ax.set_ylim(0, 105)
    ax.set_ylabel(display.ylabel)
    ax.set_title(display.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def heatmap(
    values, row_labels, col_labels, title, path: Path, xlabel: str, ylabel: str, vmax: float = 100.0
) -> Path:
    """A grid of percentages, each cell written in it (NaN cells left blank)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(col_labels), 1.2 + 0.45 * len(row_labels)))
    image = ax.imshow(values, cmap="RdYlGn", vmin=0.0, vmax=vmax, aspect="auto")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            text = "" if v is None or v != v else f"{v:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(col_labels)), labels=col_labels)
    ax.set_yticks(range(len(row_labels)), labels=row_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)
