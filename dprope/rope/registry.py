"""The one place that names the RoPE strategies: their typed configs, functions and exporters.

Each strategy's config class is the schema of `configs/rope/<name>.yaml` (registered by
`dprope.cli.register_schemas`), so a key that does not belong to the chosen strategy is an error
(``rope.num_intervals`` with ``rope=pi``), never silently ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dprope.config import ConfigError, from_mapping
from dprope.rope import export, selection, strategies
from dprope.rope.analysis import ANGLE_DTYPES
from dprope.rope.strategies import RopeScaling


@dataclass
class RopeConfig:
    """Fields every strategy has."""

    name: str = "none"  # strategy name, a key of STRATEGIES
    factor: float = 2.0  # s = target length / pre-training length (2 for 8k, 4 for 16k on LLaMA-2)

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ConfigError("name", f"unknown strategy {self.name!r} (available: {', '.join(STRATEGIES)})")
        if not isinstance(self, STRATEGIES[self.name].config):
            raise ConfigError("name", f"{self.name!r} has its own options: choose it with rope={self.name}")
        if not self.factor >= 1:
            raise ConfigError("factor", f"must be >= 1 (got {self.factor})")

    def params(self) -> dict[str, Any]:
        """The strategy's own parameters, as keyword arguments of its function."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("name", "factor")
        }


@dataclass
class YarnConfig(RopeConfig):
    name: str = "yarn"  # fixed by the preset (rope=yarn)
    beta_fast: float = 32.0  # pairs making more rotations than this over L extrapolate (YaRN's beta)
    beta_slow: float = 1.0  # pairs making fewer rotations than this over L interpolate (YaRN's alpha)
    attention_factor: float | None = None  # cos/sin scale; null = 0.1 * ln(s) + 1
    truncate: bool = True  # floor/ceil the correction range, as transformers does

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta_fast > self.beta_slow > 0:
            raise ConfigError(
                "beta_fast", f"need beta_fast > beta_slow > 0 (got {self.beta_fast}, {self.beta_slow})"
            )
        if self.attention_factor is not None and not self.attention_factor > 0:
            raise ConfigError("attention_factor", f"must be positive (got {self.attention_factor})")


@dataclass
class Llama3Config(RopeConfig):
    name: str = "llama3"  # fixed by the preset (rope=llama3)
    low_freq_factor: float = 1.0  # wavelengths above L / low_freq_factor interpolate
    high_freq_factor: float = 4.0  # wavelengths below L / high_freq_factor extrapolate

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.high_freq_factor > self.low_freq_factor > 0:
            raise ConfigError(
                "high_freq_factor",
                f"need high_freq_factor > low_freq_factor > 0 (got {self.high_freq_factor}, {self.low_freq_factor})",
            )


@dataclass
class DPRoPEConfig(RopeConfig):
    name: str = "dprope"  # fixed by the preset (rope=dprope)
    num_intervals: int = 360  # B: equal intervals of [0, 2pi) for the angle histograms
    threshold: float = 0.0  # t: scale pair i iff D_E(i) - D_best(i) > t (0 = per-pair argmin)
    num_interpolated_dims: int | None = None  # k rotary dims (2 per pair) to scale; overrides threshold
    candidates: list[str] = field(default_factory=lambda: ["none", "pi"])  # per-pair choices; 'none' required
    angle_dtype: str = "float32"  # float32 (as the model and reference code) or float64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_intervals < 1:
            raise ConfigError("num_intervals", f"must be >= 1 (got {self.num_intervals})")
        if self.num_interpolated_dims is not None and (
            self.num_interpolated_dims < 0 or self.num_interpolated_dims % 2
        ):
            raise ConfigError(
                "num_interpolated_dims",
                f"must be a non-negative even number (got {self.num_interpolated_dims})",
            )
        if self.angle_dtype not in ANGLE_DTYPES:
            raise ConfigError(
                "angle_dtype", f"must be one of {sorted(ANGLE_DTYPES)} (got {self.angle_dtype!r})"
            )
        selection.check_candidates(self.candidates)


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: its config class, its pure function and its native export."""

    config: type[RopeConfig]
    compute: Callable[..., RopeScaling]
    export: Callable[..., dict[str, Any]]
    summary: str


STRATEGIES: dict[str, Strategy] = {
    "none": Strategy(RopeConfig, strategies.none, export.export_default, "extrapolation: lambda_i = 1"),
    "pi": Strategy(RopeConfig, strategies.pi, export.export_linear, "position interpolation: lambda_i = s"),
    "ntk": Strategy(RopeConfig, strategies.ntk, export.export_ntk, "NTK-aware base: base * s^(d/(d-2))"),
    "yarn": Strategy(YarnConfig, strategies.yarn, export.export_yarn, "YaRN ramp, cos/sin x (0.1 ln s + 1)"),
    "llama3": Strategy(Llama3Config, strategies.llama3, export.export_llama3, "Llama 3.1 wavelength bands"),
    "dprope": Strategy(
        DPRoPEConfig, selection.dprope, export.export_longrope, "per-pair minimum disturbance"
    ),
}


def rope_config(data: Mapping[str, Any] | None, prefix: str = "rope") -> RopeConfig:
    """The typed config of the strategy that ``data['name']`` names; errors name ``rope.<field>``."""
    data = dict(data or {})
    name = data.get("name", "none")
    if name not in STRATEGIES:
        raise ConfigError(f"{prefix}.name", f"unknown strategy {name!r} (available: {', '.join(STRATEGIES)})")
    return from_mapping(STRATEGIES[name].config, data, prefix=prefix)


def default_config(name: str, factor: float) -> RopeConfig:
    """A strategy's config with its default parameters."""
    return STRATEGIES[name].config(name=name, factor=factor)


def build_scaling(
    cfg: RopeConfig, head_dim: int, rope_theta: float, original_length: int, prefix: str = "rope"
) -> RopeScaling:
    """Run the configured strategy for one model geometry; errors name ``rope.<field>``."""
    try:
        return STRATEGIES[cfg.name].compute(head_dim, rope_theta, original_length, cfg.factor, **cfg.params())
    except ConfigError as err:
        if err.field in ("head_dim", "rope_theta", "original_max_position_embeddings"):
            raise err.under("model") from None
        raise err.under(prefix) from None


def rope_parameters(cfg: RopeConfig, scaling: RopeScaling) -> dict[str, Any]:
    """transformers' native ``rope_parameters`` for a computed strategy."""
    return STRATEGIES[cfg.name].export(scaling, **cfg.params())
