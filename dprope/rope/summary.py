"""A strategy's result as training logs and exports it and evaluation records it (`rope.json`,
``dprope.json`` of an export, ``strategy`` of an evaluation's results)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from dprope.rope.analysis import DEFAULT_ANGLE_DTYPE, DisturbanceAnalyzer
from dprope.rope.config import RopeConfig
from dprope.rope.strategies import RopeScaling


def strategy_summary(rope: RopeConfig, scaling: RopeScaling) -> dict[str, Any]:
    """The strategy's per-pair factors and total disturbance (B of the strategy's own analysis
    settings, float32 angles as the model computes them), as logged and exported."""
    num_intervals, _ = rope.analysis_settings()
    analyzer = DisturbanceAnalyzer(scaling.geometry, num_intervals, DEFAULT_ANGLE_DTYPE)
    return {
        "strategy": rope.name,
        "factor": rope.factor,
        "target_length": scaling.target_length,
        "disturbance": analyzer.total(analyzer.per_pair(scaling)),
        "scaling_factors": scaling.scaling_factors.tolist(),
        "attention_factor": scaling.attention_factor,
        "rope_parameters": rope.export(scaling),
        "config": asdict(rope),
    }
