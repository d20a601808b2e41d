"""Figures of the reproduction: perplexity by length, loss by position (L marked), and
disturbance against perplexity at s x L across strategies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dprope.figures import pyplot, save_figure
from dprope.reproduce.config import Reproduction
from dprope.reproduce.report import mean_std

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
                (n, *mean_std(entry["perplexity"][str(n)]))
                for n in repro.lengths
                if entry["perplexity"][str(n)]
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
            if name in results["disturbance"] and entry["perplexity"][target]:
                xs.append(results["disturbance"][name])
                ys.append(mean_std(entry["perplexity"][target])[0])
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


def write_figures(repro: Reproduction, results: dict[str, Any], root: Path) -> list[Path]:
    """The three figures, once at least one model has been measured (none before)."""
    if not any(entry["curves"] for kind, _ in KINDS for entry in results[kind].values()):
        return []
    return [
        plot_ppl_by_length(repro, results, root / "ppl_by_length.png"),
        plot_loss_by_position(repro, results, root / "loss_by_position.png"),
        plot_disturbance_vs_perplexity(repro, results, root / "disturbance_vs_perplexity.png"),
    ]
