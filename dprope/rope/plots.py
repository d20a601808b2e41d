"""Figures of the analysis: angle distributions of a few pairs and per-pair disturbance."""

from __future__ import annotations

from pathlib import Path

import torch

from dprope.figures import pyplot, save_figure
from dprope.rope.report import AnalysisResult


def most_disputed_pairs(result: AnalysisResult, count: int) -> list[int]:
    """Pairs where interpolation and extrapolation disturb the distribution most differently:
    half where interpolation wins by the most, half where extrapolation does."""
    margin = result.strategies["none"].per_pair - result.strategies["pi"].per_pair  # > 0: interpolation wins
    interpolation_wins = torch.argsort(margin, descending=True, stable=True)[: count - count // 2]
    extrapolation_wins = [
        i for i in torch.argsort(margin, stable=True)[: count // 2].tolist() if margin[i] < 0
    ]
    return sorted(set(interpolation_wins.tolist()) | set(extrapolation_wins))


def plot_angle_distributions(result: AnalysisResult, path: Path, count: int) -> Path:
    """Pre-training vs interpolated vs extrapolated angle histograms for the most disputed pairs."""
    plt = pyplot()
    pairs = most_disputed_pairs(result, count)
    analyzer = result.analyzer
    interpolated = analyzer.distribution(result.strategies["pi"].scaling)
    extrapolated = analyzer.distribution(result.strategies["none"].scaling)
    centers = (torch.arange(result.num_intervals) + 0.5) * (360.0 / result.num_intervals)  # degrees
    fig, axes = plt.subplots(len(pairs), 1, figsize=(9, 2.4 * len(pairs)), squeeze=False)
    for ax, i in zip(axes[:, 0], pairs, strict=True):
        ax.plot(
            centers,
            analyzer.original[i],
            label=f"pre-training (N={result.model.original_max_position_embeddings})",
            lw=1.6,
        )
        ax.plot(
            centers,
            interpolated[i],
            label=f"interpolation, D={result.strategies['pi'].per_pair[i]:.4f}",
            lw=1,
        )
        ax.plot(
            centers,
            extrapolated[i],
            label=f"extrapolation, D={result.strategies['none'].per_pair[i]:.4f}",
            lw=1,
        )
        ax.set_title(f"pair {i} (dims {2 * i}, {2 * i + 1})", fontsize=9)
        ax.set_ylabel("P(b)")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel(f"rotary angle (degrees), {result.num_intervals} intervals")
    fig.suptitle(f"{result.model.name}: rotary-angle distributions at s={result.factor:g}", fontsize=10)
    return save_figure(fig, path, dpi=110)


def plot_per_pair_disturbance(result: AnalysisResult, path: Path) -> Path:
    """D_i of every strategy against the pair index (log scale)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    floor = 1e-7  # log axis: pairs with no disturbance sit on the floor
    for name, res in result.strategies.items():
        ax.plot(
            res.per_pair.clamp(min=floor),
            label=f"{name} ({res.disturbance:.2f})",
            lw=2 if name == result.selected else 1,
        )
    ax.set_yscale("log")
    ax.set_xlabel("rotary pair i (low index = high frequency)")
    ax.set_ylabel("D_i = KL(P_i || P'_i)")
    ax.set_title(
        f"{result.model.name}: per-pair disturbance at s={result.factor:g}, B={result.num_intervals}",
        fontsize=10,
    )
    ax.legend(fontsize=8, title="strategy (total x1e3)", title_fontsize=8)
    return save_figure(fig, path, dpi=110)


def write_figures(result: AnalysisResult, output_dir: Path, num_pairs: int) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_per_pair_disturbance(result, output_dir / "per_pair_disturbance.png")]
    if num_pairs > 0:
        paths.append(plot_angle_distributions(result, output_dir / "angle_distributions.png", num_pairs))
    return paths
