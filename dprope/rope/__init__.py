"""RoPE scaling: strategies, rotary-angle analysis, the DPRoPE selection and native export."""

from dprope.rope.analysis import DisturbanceAnalyzer, angle_distribution, kl_per_pair
from dprope.rope.registry import (
    STRATEGIES,
    RopeConfig,
    build_scaling,
    default_config,
    rope_config,
    rope_parameters,
)
from dprope.rope.strategies import RopeScaling, default_inv_freq

__all__ = [
    "STRATEGIES",
    "DisturbanceAnalyzer",
    "RopeConfig",
    "RopeScaling",
    "angle_distribution",
    "build_scaling",
    "default_config",
    "default_inv_freq",
    "kl_per_pair",
    "rope_config",
    "rope_parameters",
]
