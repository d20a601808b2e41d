"""The one place that names the RoPE strategies: name -> config class.

Each class (`dprope.rope.config`, `dprope.rope.selection.DPRoPEConfig`) is the schema of
``configs/rope/<name>.yaml`` (registered by `dprope.cli.register_schemas`), checks itself,
computes itself from a model's `RotaryGeometry` and exports itself; so a key that does not belong
to the chosen strategy is an error (``rope.num_intervals`` with ``rope=pi``), never silently
ignored. DPRoPE's candidates are these strategies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dprope.config import ConfigError, from_mapping
from dprope.rope.config import Llama3Config, NoneConfig, NTKConfig, PIConfig, RopeConfig, YarnConfig
from dprope.rope.geometry import RotaryGeometry
from dprope.rope.selection import DPRoPEConfig
from dprope.rope.strategies import RopeScaling

STRATEGIES: dict[str, type[RopeConfig]] = {
    "none": NoneConfig,
    "pi": PIConfig,
    "ntk": NTKConfig,
    "yarn": YarnConfig,
    "llama3": Llama3Config,
    "dprope": DPRoPEConfig,
}


def rope_config(data: Mapping[str, Any] | None, prefix: str = "rope") -> RopeConfig:
    """The typed config of the strategy that ``data['name']`` names; errors name ``rope.<field>``."""
    data = dict(data or {})
    name = data.get("name", "none")
    if name not in STRATEGIES:
        raise ConfigError(f"{prefix}.name", f"unknown strategy {name!r} (available: {', '.join(STRATEGIES)})")
    return from_mapping(STRATEGIES[name], data, prefix=prefix)


def default_config(name: str, factor: float) -> RopeConfig:
    """A strategy's config with its default parameters."""
    return STRATEGIES[name](factor=factor)


def compute_scaling(cfg: RopeConfig, geometry: RotaryGeometry, prefix: str = "rope") -> RopeScaling:
    """``cfg.compute(geometry)`` with its errors named for the user: ``<prefix>.<field>`` for the
    strategy's own fields, ``model.<field>`` for the model's."""
    try:
        return cfg.compute(geometry)
    except ConfigError as err:
        raise (err if err.field.startswith("model.") else err.under(prefix)) from None


def build_scaling(
    cfg: RopeConfig, head_dim: int, rope_theta: float, original_length: int, prefix: str = "rope"
) -> RopeScaling:
    """`compute_scaling` for a geometry given as numbers."""
    return compute_scaling(cfg, RotaryGeometry(head_dim, rope_theta, original_length), prefix)


def rope_parameters(cfg: RopeConfig, scaling: RopeScaling) -> dict[str, Any]:
    """transformers' native ``rope_parameters`` for a computed strategy (``cfg.export``)."""
    return cfg.export(scaling)
