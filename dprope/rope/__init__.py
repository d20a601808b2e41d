"""RoPE scaling: a model's rotary geometry, the strategies, rotary-angle analysis, the DPRoPE
selection and native export."""

from dprope.rope.analysis import DisturbanceAnalyzer, angle_distribution, kl_per_pair
from dprope.rope.config import RopeConfig
from dprope.rope.geometry import RotaryGeometry, default_inv_freq
from dprope.rope.registry import (
    STRATEGIES,
    build_scaling,
    compute_scaling,
    default_config,
    rope_config,
    rope_parameters,
)
from dprope.rope.strategies import RopeScaling

__all__ = [
    "STRATEGIES",
    "DisturbanceAnalyzer",
    "RopeConfig",
    "RopeScaling",
    "RotaryGeometry",
    "angle_distribution",
    "build_scaling",
    "compute_scaling",
    "default_config",
    "default_inv_freq",
    "kl_per_pair",
    "rope_config",
    "rope_parameters",
]
