"""Figures of the reproduction: perplexity by length, loss by position (L marked), disturbance
against perplexity at s x L across strategies, and the retrieval heatmaps (depth x length)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dprope.figures import pyplot, save_figure
from dprope.reproduce.config import Reproduction
from dprope.reproduce.results import mean_grid, mean_std, seed_values

KINDS = (("free", "training-free"), ("tuned", "fine-tuned"))


def _mean_curve(curves: list[list[float]]) -> list[float]:
    return [sum(values) / len(values) for values in zip(*curves, strict=True)]


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the per-position loss is noisy over a few documents)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_ppl_by_length(repro: Reproduction, results: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (kind, title) in zip(axes, KINDS, strict=True):
        for name, entry in results[kind].items():
            points = [
                (n, *mean_std(seed_values(entry, ("perplexity", str(n)))))
                for n in repro.lengths
                if entry["by_seed"]
            ]
            if points:
                ax.errorbar(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    yerr=[p[2] or 0 for p in points],
                    marker="o",
                    capsize=3,
                    label=name,
                )
        ax.axvline(repro.length, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(repro.lengths, labels=[str(n) for n in repro.lengths])
        ax.set_yscale("log")
        ax.set_xlabel("evaluation length (tokens)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("perplexity (mean over seeds)")
    return save_figure(fig, path)


def plot_loss_by_position(repro: Reproduction, results: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    window = max(1, repro.length // 8)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (kind, title) in zip(axes, KINDS, strict=True):
        for name, entry in results[kind].items():
            if entry["curves"]:
                curve = _smooth(_mean_curve(entry["curves"]), window)
                ax.plot(range(1, len(curve) + 1), curve, label=name, linewidth=1.2)
        ax.axvline(repro.length, color="black", linestyle="--", linewidth=1, label=f"L = {repro.length}")
        ax.set_xlabel("token position")
        ax.set_title(f"{title} (moving average over {window})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("loss (nats, mean over documents and seeds)")
    return save_figure(fig, path)


def plot_disturbance_vs_perplexity(repro: Reproduction, results: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    target = str(repro.target_length)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (kind, title), marker in zip(KINDS, ("o", "^"), strict=True):
        xs, ys, names = [], [], []
        for name, entry in results[kind].items():
            if name in results["disturbance"] and entry["by_seed"]:
                xs.append(results["disturbance"][name])
                ys.append(mean_std(seed_values(entry, ("perplexity", target)))[0])
                names.append(name)
        ax.scatter(xs, ys, marker=marker, label=title)
        for x, y, name in zip(xs, ys, names, strict=True):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("rotary-angle disturbance (x1000)")
    ax.set_ylabel(f"perplexity at s x L = {target}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_retrieval_heatmap(repro: Reproduction, results: dict[str, Any], path: Path) -> Path:
    """One panel per (setting, strategy): exact-match accuracy by depth (rows) and length
    (columns), mean over seeds."""
    plt = pyplot()
    depths = [f"{d:g}" for d in repro.reproduce.measure.retrieval.depths]
    lengths = [str(n) for n in repro.lengths]
    panels = [
        (title, name, entry)
        for kind, title in KINDS
        for name, entry in results[kind].items()
        if entry["by_seed"]
    ]
    columns = min(6, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.3 * columns + 1, 2.4 * rows), squeeze=False, layout="constrained"
    )
    image = None
    for ax, (title, name, entry) in zip(axes.flat, panels, strict=False):
        grid = mean_grid(entry)
        cells = [[100 * grid[n][d] for n in lengths] for d in depths]
        image = ax.imshow(cells, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(lengths)), labels=lengths, fontsize=7)
        ax.set_yticks(range(len(depths)), labels=depths, fontsize=7)
        ax.set_title(f"{name} ({title})", fontsize=8)
        for i, row in enumerate(cells):
            for j, v in enumerate(row):
                ax.text(
                    j,
                    i,
                    f"{v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v < 60 else "black",
                )
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("depth of the key", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("prompt length", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="exact match (%)")
    fig.suptitle("passkey retrieval, mean over seeds", fontsize=9)
    fig.savefig(path, dpi=120)  # constrained layout (with the shared colour bar), not save_figure's tight one
    plt.close(fig)
    return path


def write_figures(repro: Reproduction, results: dict[str, Any], root: Path) -> list[Path]:
    """The four figures, once at least one model has been measured (none before)."""
    if not any(entry["curves"] for kind, _ in KINDS for entry in results[kind].values()):
        return []
    return [
        plot_ppl_by_length(repro, results, root / "ppl_by_length.png"),
        plot_loss_by_position(repro, results, root / "loss_by_position.png"),
        plot_disturbance_vs_perplexity(repro, results, root / "disturbance_vs_perplexity.png"),
        plot_retrieval_heatmap(repro, results, root / "retrieval_heatmap.png"),
    ]
