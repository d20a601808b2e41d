"""The typed config of each RoPE strategy: it checks itself, computes itself and exports itself.

One class per strategy (registered in `dprope.rope.registry.STRATEGIES`), each the schema of
``configs/rope/<name>.yaml``. Each class has one ``validate`` (transformers'
``_validate_<rope_type>`` model, raising instead of warning): it runs alone on construction
(Hydra's and Python's alike) and again against a model's `RotaryGeometry` before ``compute``, for
the rules that depend on the model (DPRoPE's k <= head_dim, NTK's head_dim >= 4). ``compute``
calls the strategy's pure function in `dprope.rope.strategies` with explicit numbers; ``export``
turns the result into transformers' native ``rope_parameters`` (docs/method-notes.md, section 5), so an
exported model needs no custom code. ``inv_freq`` is a non-persistent buffer: patching it in
memory would not survive ``save_pretrained``, so export always goes through the config.

A strategy's defaults are written once, as the defaults of its fields.

Adding a strategy: a pure function in `strategies.py`, a class here (fields with their comments,
``validate``, ``compute``, ``export``, ``rule``), one line in ``STRATEGIES`` and a preset
``configs/rope/<name>.yaml``; DPRoPE can then take it as a candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from dprope.config import ConfigError
from dprope.rope import strategies
from dprope.rope.analysis import DEFAULT_ANGLE_DTYPE, DEFAULT_NUM_INTERVALS
from dprope.rope.geometry import RotaryGeometry
from dprope.rope.strategies import RopeScaling


@dataclass
class RopeConfig:
    """Fields every strategy has; a strategy is one subclass, registered under its ``name``."""

    name: str = "none"  # strategy name, a key of STRATEGIES
    factor: float = 2.0  # s = target length / pre-training length (2 for 8k, 4 for 16k on LLaMA-2)

    rule: ClassVar[str] = ""  # one line for the disturbance table

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, geometry: RotaryGeometry | None = None) -> None:
        """Raise a `ConfigError` naming the first bad field: a field of this config (unqualified),
        or ``model.<field>`` where the model's geometry does not suit the strategy."""
        from dprope.rope.registry import STRATEGIES

        if self.name not in STRATEGIES:
            raise ConfigError("name", f"unknown strategy {self.name!r} (available: {', '.join(STRATEGIES)})")
        if type(self) is not STRATEGIES[self.name]:
            raise ConfigError("name", f"{self.name!r} has its own options: choose it with rope={self.name}")
        if not self.factor >= 1:
            raise ConfigError("factor", f"must be >= 1 (got {self.factor})")
        if not math.isfinite(self.factor):
            raise ConfigError("factor", f"must be finite (got {self.factor})")

    def compute(self, geometry: RotaryGeometry) -> RopeScaling:
        """The strategy's divisors and frequencies for one model (checked against it first)."""
        self.validate(geometry)
        return self._compute(geometry)

    def _compute(self, geometry: RotaryGeometry) -> RopeScaling:
        raise NotImplementedError

    def export(self, scaling: RopeScaling) -> dict[str, Any]:
        """transformers' native ``rope_parameters`` for the strategy's result."""
        raise NotImplementedError

    def analysis_settings(self) -> tuple[int, str]:
        """B and the angle dtype the strategy's disturbance is measured with: the analysis
        defaults, unless the strategy itself selects by disturbance."""
        return DEFAULT_NUM_INTERVALS, DEFAULT_ANGLE_DTYPE

    def with_analysis_settings(self, num_intervals: int, angle_dtype: str) -> RopeConfig:
        """The same strategy under another analysis's B and dtype (unchanged unless it selects
        by disturbance)."""
        return self


@dataclass
class NoneConfig(RopeConfig):
    name: str = "none"  # fixed by the preset (rope=none)

    rule: ClassVar[str] = "extrapolation: lambda_i = 1"

    def _compute(self, geometry: RotaryGeometry) -> RopeScaling:
        return strategies.none(geometry.head_dim, geometry.rope_theta, geometry.original_length, self.factor)

    def export(self, scaling: RopeScaling) -> dict[str, Any]:
        """transformers' ``default`` type: the original frequencies."""
        return {"rope_type": "default", "rope_theta": scaling.rope_theta}


@dataclass
class PIConfig(RopeConfig):
    name: str = "pi"  # fixed by the preset (rope=pi)

    rule: ClassVar[str] = "position interpolation: lambda_i = s"

    def _compute(self, geometry: RotaryGeometry) -> RopeScaling:
        return strategies.pi(geometry.head_dim, geometry.rope_theta, geometry.original_length, self.factor)

    def export(self, scaling: RopeScaling) -> dict[str, Any]:
        """transformers' ``linear`` type."""
        return {"rope_type": "linear", "rope_theta": scaling.rope_theta, "factor": scaling.factor}


@dataclass
class NTKConfig(RopeConfig):
    name: str = "ntk"  # fixed by the preset (rope=ntk)

    rule: ClassVar[str] = "NTK-aware base: base * s^(d/(d-2))"

    def validate(self, geometry: RotaryGeometry | None = None) -> None:
        super().validate(geometry)
        if geometry is not None and geometry.head_dim < 4:
            raise ConfigError("model.head_dim", f"ntk needs head_dim >= 4 (got {geometry.head_dim})")

    def _compute(self, geometry: RotaryGeometry) -> RopeScaling:
        return strategies.ntk(geometry.head_dim, geometry.rope_theta, geometry.original_length, self.factor)

    def export(self, scaling: RopeScaling) -> dict[str, Any]:
        """transformers' ``default`` type with the raised base."""
        return {"rope_type": "default", "rope_theta": scaling.details["ntk_rope_theta"]}


@dataclass
class YarnConfig(RopeConfig):
    name: str = "yarn"  # fixed by the preset (rope=yarn)
    beta_fast: float = 32.0  # pairs making more rotations than this over L extrapolate (YaRN's beta)
    beta_slow: float = 1.0  # pairs making fewer rotations than this over L interpolate (YaRN's alpha)
    attention_factor: float | None = None  # cos/sin scale; null = 0.1 * ln(s) + 1
    truncate: bool = True  # floor/ceil the correction range, as transformers does

    rule: ClassVar[str] = "YaRN ramp, cos/sin x (0.1 ln s + 1)"

    def validate(self, geometry: RotaryGeometry | None = None) -> None:
        super().validate(geometry)
        if not self.beta_slow > 0:
            raise ConfigError("beta_slow", f"must be positive (got {self.beta_slow})")
        if not self.beta_fast > self.beta_slow:
            raise ConfigError(
                "beta_fast", f"must be greater than beta_slow = {self.beta_slow} (got {self.beta_fast})"
            )
        if self.attention_factor is not None and not self.attention_factor > 0:
            raise ConfigError("attention_factor", f"must be positive (got {self.attention_factor})")

    def _compute(self, geometry: RotaryGeometry) -> RopeScaling:
        return strategies.yarn(
            geometry.head_dim,
            geometry.rope_theta,
            geometry.original_length,
            self.factor,
            beta_fast=self.beta_fast,
            beta_slow=self.beta_slow,
            attention_factor=self.attention_factor,
            truncate=self.truncate,
        )

    def export(self, scaling: RopeScaling) -> dict[str, Any]:
        """transformers' ``yarn`` type with this config's ramp parameters."""
        params: dict[str, Any] = {
            "rope_type": "yarn",
            "rope_theta": scaling.rope_theta,
            "factor": scaling.factor,
            "original_max_position_embeddings": scaling.original_length,
            "beta_fast": self.beta_fast,
            "beta_slow": self.beta_slow,
        }
        if self.attention_factor is not None:
            params["attention_factor"] = self.attention_factor
        if not self.truncate:
            params["truncate"] = False
        return params


@dataclass
class Llama3Config(RopeConfig):
    name: str = "llama3"  # fixed by the preset (rope=llama3)
    low_freq_factor: float = 1.0  # wavelengths above L / low_freq_factor interpolate
    high_freq_factor: float = 4.0  # wavelengths below L / high_freq_factor extrapolate

    rule: ClassVar[str] = "Llama 3.1 wavelength bands"

    def validate(self, geometry: RotaryGeometry | None = None) -> None:
        super().validate(geometry)
        if not self.low_freq_factor > 0:
            raise ConfigError("low_freq_factor", f"must be positive (got {self.low_freq_factor})")
        if not self.high_freq_factor > self.low_freq_factor:
            raise ConfigError(
                "high_freq_factor",
                f"must be greater than low_freq_factor = {self.low_freq_factor} (got {self.high_freq_factor})",
            )

    def _compute(self, geometry: RotaryGeometry) -> RopeScaling:
        return strategies.llama3(
            geometry.head_dim,
            geometry.rope_theta,
            geometry.original_length,
            self.factor,
            low_freq_factor=self.low_freq_factor,
            high_freq_factor=self.high_freq_factor,
        )

    def export(self, scaling: RopeScaling) -> dict[str, Any]:
        """transformers' ``llama3`` type."""
        return {
            "rope_type": "llama3",
            "rope_theta": scaling.rope_theta,
            "factor": scaling.factor,
            "original_max_position_embeddings": scaling.original_length,
            "low_freq_factor": self.low_freq_factor,
            "high_freq_factor": self.high_freq_factor,
        }


def longrope_parameters(scaling: RopeScaling) -> dict[str, Any]:
    """Any per-pair divisor vector as transformers' ``longrope`` type: ``short_factor =
    long_factor = lambda`` and ``attention_factor = 1``.

    ``short_mscale``/``long_mscale`` = 1 stop vLLM from applying its own default scale;
    transformers logs them as unrecognized keys and ignores them.
    """
    factors = [float(x) for x in scaling.scaling_factors.tolist()]
    return {
        "rope_type": "longrope",
        "rope_theta": scaling.rope_theta,
        "factor": scaling.factor,
        "original_max_position_embeddings": scaling.original_length,
        "short_factor": factors,
        "long_factor": list(factors),
        "attention_factor": 1.0,
        "short_mscale": 1.0,
        "long_mscale": 1.0,
    }
