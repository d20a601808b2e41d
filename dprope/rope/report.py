"""The disturbance table of every strategy for one model and factor (the shape of the paper's
disturbance table), the per-pair view of the selected strategy, and `analysis.json`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dprope.config import ConfigError, typed_sections
from dprope.model import ModelConfig
from dprope.rope.analysis import DisturbanceAnalyzer, check_num_intervals
from dprope.rope.analysis import angle_dtype as check_angle_dtype
from dprope.rope.config import RopeConfig
from dprope.rope.registry import STRATEGIES, compute_scaling
from dprope.rope.strategies import RopeScaling


@dataclass
class AnalysisConfig:
    num_intervals: int | None = (
        None  # B for the table; null = the selected strategy's (rope.num_intervals for dprope), else 360
    )
    angle_dtype: str | None = None  # float32 | float64; null = rope.angle_dtype for dprope, else float32
    output_dir: str | None = None  # where analysis.json and figures go; null = the run directory
    num_pairs_plotted: int = (
        4  # angle-distribution panels, for the pairs where interpolation and extrapolation disagree most
    )
    figures: bool = True  # write PNG figures next to analysis.json

    def __post_init__(self) -> None:
        if self.num_intervals is not None:
            check_num_intervals(self.num_intervals)
        if self.angle_dtype is not None:
            check_angle_dtype(self.angle_dtype)
        if self.num_pairs_plotted < 0:
            raise ConfigError("num_pairs_plotted", f"must be >= 0 (got {self.num_pairs_plotted})")


@dataclass
class AnalysisJob:
    """What `launch/analyze.py` runs, typed: the root schema of `configs/analyze.yaml` (its fields
    are the config's only top-level keys)."""

    model: ModelConfig  # only the rotary numbers are read, never weights
    rope: RopeConfig  # the selected strategy and factor
    analysis: AnalysisConfig

    @classmethod
    def from_config(cls, cfg: Any) -> AnalysisJob:
        return typed_sections(cls, cfg)


@dataclass
class StrategyResult:
    config: RopeConfig
    scaling: RopeScaling
    per_pair: torch.Tensor  # D_i, shape (pairs,)
    disturbance: float  # 1000 x mean D_i


@dataclass
class AnalysisResult:
    model: ModelConfig
    selected: str
    factor: float
    num_intervals: int
    angle_dtype: str
    analyzer: DisturbanceAnalyzer
    strategies: dict[str, StrategyResult]

    @property
    def target_length(self) -> int:
        return self.strategies[self.selected].scaling.target_length


def table_configs(rope: RopeConfig, num_intervals: int, angle_dtype: str) -> dict[str, RopeConfig]:
    """One config per registered strategy: the selected one as given, the others with their
    defaults at the same factor (a strategy that selects by disturbance with the table's B and
    dtype)."""
    return {
        name: rope
        if name == rope.name
        else cls(factor=rope.factor).with_analysis_settings(num_intervals, angle_dtype)
        for name, cls in STRATEGIES.items()
    }


def run_analysis(model: ModelConfig, rope: RopeConfig, settings: AnalysisConfig) -> AnalysisResult:
    """Every strategy's per-pair and total disturbance for ``model`` at ``rope.factor``."""
    own_intervals, own_dtype = rope.analysis_settings()
    num_intervals = settings.num_intervals or own_intervals
    dtype = settings.angle_dtype or own_dtype
    geometry = model.geometry
    analyzer = DisturbanceAnalyzer(geometry, num_intervals, dtype)
    results = {}
    for name, cfg in table_configs(rope, num_intervals, dtype).items():
        scaling = compute_scaling(cfg, geometry)
        per_pair = analyzer.per_pair(scaling)
        results[name] = StrategyResult(cfg, scaling, per_pair, analyzer.total(per_pair))
    return AnalysisResult(model, rope.name, rope.factor, num_intervals, dtype, analyzer, results)


def to_json(result: AnalysisResult) -> dict[str, Any]:
    """The `analysis.json` document; ``strategies`` maps name -> disturbance, per_pair, scaling_factors."""
    model = result.model
    geometry = result.analyzer.geometry
    doc: dict[str, Any] = {
        "model": {
            "name": model.name,
            "family": model.family,
            "head_dim": geometry.head_dim,
            "rotary_dim": geometry.rotary_dim,
            "rope_theta": geometry.rope_theta,
            "pretraining_rope_parameters": geometry.native_parameters(),
            "original_max_position_embeddings": geometry.original_length,
        },
        "factor": result.factor,
        "target_length": result.target_length,
        "num_intervals": result.num_intervals,
        "angle_dtype": result.angle_dtype,
        "disturbance_unit": "1000 x mean over rotary pairs of KL(P_pretrain || P_extended)",
        "selected": result.selected,
        "strategies": {},
    }
    for name, res in result.strategies.items():
        entry = {
            "disturbance": res.disturbance,
            "per_pair": res.per_pair.tolist(),
            "scaling_factors": res.scaling.scaling_factors.tolist(),
            "attention_factor": res.scaling.attention_factor,
            "rope_parameters": res.config.export(res.scaling),
        }
        if "choices" in res.scaling.details:
            entry["choices"] = res.scaling.details["choices"]
            entry["num_interpolated_dims"] = res.scaling.details["num_interpolated_dims"]
            entry["candidate_disturbance"] = res.scaling.details["candidate_disturbance"]
        doc["strategies"][name] = entry
    return doc


def write_json(result: AnalysisResult, output_dir: Path) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "analysis.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_json(result), indent=2))
    tmp.replace(path)
    return path


def format_table(result: AnalysisResult) -> str:
    """Every strategy's total disturbance, side by side with PI as the reference."""
    m = result.model
    header = (
        f"Rotary-angle disturbance: {m.name} ({result.analyzer.geometry.describe()}) -> "
        f"{result.target_length} (s={result.factor:g}), B={result.num_intervals}, {result.angle_dtype}\n"
        "disturbance = 1000 x mean_i KL(P_i || P'_i); lower keeps the pre-training distribution better\n"
    )
    pi = result.strategies["pi"].disturbance
    lines = [f"{'strategy':<10} {'disturbance':>12} {'vs pi':>10} {'scaled dims':>12}  rule"]
    for name, res in result.strategies.items():
        scaled = 2 * int((res.scaling.scaling_factors > 1 + 1e-6).sum())
        marker = " *" if name == result.selected else ""
        rel = f"{100 * (res.disturbance - pi) / pi:+.0f}%" if pi > 0 else "-"
        lines.append(
            f"{name + marker:<10} {res.disturbance:>12.3f} {rel:>10} {scaled:>12}  {res.config.rule}"
        )
    return header + "\n".join(lines) + "\n(* = selected strategy)"


def format_pairs(result: AnalysisResult) -> str:
    """Per-pair view of the selected strategy: lambda_i, its D_i, and DPRoPE's choice and candidates."""
    res = result.strategies[result.selected]
    scaling = res.scaling
    base = result.analyzer.original_inv_freq.double()
    rotations = base * scaling.original_length / (2 * math.pi)
    details = scaling.details
    candidates = list(details.get("candidate_disturbance", {}))
    head = f"{'pair':>4} {'dims':>7} {'rotations/L':>12} {'lambda':>8} {'D_i':>10}"
    if candidates:
        head += f" {'choice':>7} " + " ".join(f"{'D_' + c:>10}" for c in candidates)
    lines = [f"Per-pair view of '{result.selected}' (pair i rotates dims 2i, 2i+1):", head]
    for i in range(scaling.num_pairs):
        row = (
            f"{i:>4} {f'{2 * i}-{2 * i + 1}':>7} {rotations[i].item():>12.2f} "
            f"{scaling.scaling_factors[i].item():>8.4f} {res.per_pair[i].item():>10.5f}"
        )
        if candidates:
            row += f" {details['choices'][i]:>7} " + " ".join(
                f"{details['candidate_disturbance'][c][i]:>10.5f}" for c in candidates
            )
        lines.append(row)
    if candidates:
        lines.append(
            f"scaled rotary dims k = {details['num_interpolated_dims']} of {scaling.geometry.rotary_dim}"
        )
    return "\n".join(lines)
