"""PNG figures of an evaluation: one or two per benchmark, and the side-by-side comparison plot.

`plot_summaries` draws any benchmark's summary rows (one per model): numeric columns (lengths)
as lines over a log2 length axis, named columns (buckets, tasks) as grouped bars; ``avg`` is
left out of the drawing (it is in the tables).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from dprope.eval.common import TITLES, BenchmarkResult
from dprope.eval.longbench_tasks import BUCKETS
from dprope.figures import pyplot, save_figure

YLABELS = {
    "passkey": "accuracy (%)",
    "perplexity": "perplexity (lower is better)",
    "longbench_e": "score (x100)",
    "ruler": "string match (x100)",
    "open_llm": "score (x100)",
}


def _numeric(columns: list[str]) -> bool:
    return bool(columns) and all(c.isdigit() for c in columns)


def plot_summaries(rows: Mapping[str, Mapping[str, float]], benchmark: str, path: Path) -> Path:
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
        if benchmark == "perplexity":
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
    if benchmark != "perplexity":
        ax.set_ylim(0, 105)  # percentages
    ax.set_ylabel(YLABELS.get(benchmark, "score"))
    ax.set_title(TITLES.get(benchmark, benchmark))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _heatmap(
    values, row_labels, col_labels, title, path: Path, xlabel: str, ylabel: str, vmax: float = 100.0
) -> Path:
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


def plot_benchmark(result: BenchmarkResult, model_name: str, output_dir: Path) -> list[Path]:
    """The figures of one model's benchmark result."""
    name, details = result.name, result.details
    paths = [plot_summaries({model_name: result.summary}, name, output_dir / f"{name}.png")]
    if name == "passkey":
        paths.append(
            _heatmap(
                details["accuracy"],
                [str(n) for n in details["lengths"]],
                [f"{d:g}" for d in details["depths"]],
                f"passkey accuracy (%), {model_name}",
                output_dir / "passkey_heatmap.png",
                "key depth",
                "length (tokens)",
            )
        )
    elif name == "longbench_e":
        datasets = details["datasets"]
        columns = [*BUCKETS, "avg"]
        values = [[scores[c] for c in columns] for scores in datasets.values()]
        paths.append(
            _heatmap(
                values,
                list(datasets),
                columns,
                f"LongBench-E, {model_name}",
                output_dir / "longbench_e_datasets.png",
                "length bucket",
                "dataset",
            )
        )
    elif name == "ruler":
        scores = details["scores"]
        paths.append(plot_summaries(scores, "ruler", output_dir / "ruler_tasks.png"))
    return paths
