"""A strategy's result as training logs and exports it and evaluation records it (`rope.json`,
``dprope.json`` of an export, ``strategy`` of an evaluation's results)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from dprope.rope.analysis import DisturbanceAnalyzer
from dprope.rope.registry import RopeConfig, rope_parameters
from dprope.rope.strategies import RopeScaling


def strategy_summary(rope: RopeConfig, scaling: RopeScaling, num_intervals: int = 360) -> dict[str, Any]:
    """The strategy's per-pair factors and total disturbance, as logged and exported."""
    analyzer = DisturbanceAnalyzer(
        scaling.head_dim,
        scaling.rope_theta,
        scaling.original_length,
        getattr(rope, "num_intervals", num_intervals),
    )
    return {
        "strategy": rope.name,
        "factor": rope.factor,
        "target_length": scaling.target_length,
        "disturbance": analyzer.total(analyzer.per_pair(scaling)),
        "scaling_factors": scaling.scaling_factors.tolist(),
        "attention_factor": scaling.attention_factor,
        "rope_parameters": rope_parameters(rope, scaling),
        "config": asdict(rope),
    }
