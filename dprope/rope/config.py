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

On a model whose own RoPE is already scaled (`RotaryGeometry.is_plain` false: Llama-3.1's
``llama3`` frequencies), ``compute`` applies the strategy's rule to the model's effective
frequencies over its context L (``divisors``, the rules of `dprope.rope.strategies` on any
reference), and ``export`` writes transformers' ``longrope`` with the product of the model's own
per-pair divisors and the strategy's and the product of their attention factors: the exported
model has exactly the frequencies ``compute`` returns (``none`` keeps the model's own
``rope_parameters``). On plain RoPE each strategy exports its own native rope type.

Adding a strategy: a pure function in `strategies.py` (and its rule on any reference frequencies),
a class here (fields with their comments, ``validate``, ``_compute`` (the native formula on plain
RoPE), ``divisors`` (the rule on an already-scaled RoPE), ``_export`` (its transformers rope
type), ``rule``), one line in ``STRATEGIES`` and a preset ``configs/rope/<name>.yaml``; DPRoPE can
then take it as a candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from dprope.config import ConfigError
from dprope.rope import strategies
from dprope.rope.analysis import DEFAULT_ANGLE_DTYPE, DEFAULT_NUM_INTERVALS
from dprope.rope.geometry import RotaryGeometry
from dprope.rope.strategies import RopeScaling, scaling_result


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
        """The strategy's divisors and frequencies for one model (checked against it first): its
        native formula on plain RoPE, its rule on the model's own frequencies otherwise."""
        self.validate(geometry)
        if geometry.is_plain:
            return replace(self._compute(geometry.rotary_base()), geometry=geometry)
        divisors, attention_factor, details = self.divisors(geometry)
        return scaling_result(
            self.name,
            geometry,
            self.factor,
            geometry.scaled_inv_freq(divisors),
            attention_factor,
            scaling_factors=divisors,
            **details,
        )

    def _compute(self, geometry: RotaryGeometry) -> RopeScaling:
        """The native formula on a plain geometry (its rotating dimensions)."""
        raise NotImplementedError

    def divisors(self, geometry: RotaryGeometry) -> tuple[torch.Tensor, float, dict[str, Any]]:
        """lambda_i of the model's own frequencies (float64), the cos/sin attention factor and the
        details, for a model whose RoPE is already scaled."""
        raise NotImplementedError

    def export(self, scaling: RopeScaling) -> dict[str, Any]:
        """transformers' native ``rope_parameters`` for the strategy's result: the strategy's own
        rope type on plain RoPE, ``longrope`` composing with the model's own scaling otherwise."""
        geometry = scaling.geometry
        if not geometry.is_plain:
            return longrope_parameters(scaling)
        params = self._export(scaling)
        if geometry.partial_rotary_factor != 1:
            params["partial_rotary_factor"] = geometry.partial_rotary_factor
        return params

    def _export(self, scaling: RopeScaling) -> dict[str, Any]:
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

    def compute(self, geometry: RotaryGeometry) -> RopeScaling:
        self.validate(geometry)
        ones = torch.ones(geometry.num_pairs, dtype=torch.float64)
        return scaling_result("none", geometry, self.factor, geometry.inv_freq(), scaling_factors=ones)

    def export(self, scaling: RopeScaling) -> dict[str, Any]:
        """The model's own ``rope_parameters``: its original frequencies (``default`` for plain RoPE)."""
        return scaling.geometry.native_parameters()


@dataclass
class PIConfig(RopeConfig):
    name: str = "pi"  # fixed by the preset (rope=pi)

    rule: ClassVar[str] = "position interpolation: lambda_i = s"

    def _compute(self, geometry: RotaryGeometry) -> RopeScaling:
        return strategies.pi(geometry.head_dim, geometry.rope_theta, geometry.original_length, self.factor)

    def divisors(self, geometry):
        return strategies.pi_divisors(geometry.num_pairs, self.factor), 1.0, {}

    def _export(self, scaling: RopeScaling) -> dict[str, Any]:
        """transformers' ``linear`` type."""
        return {"rope_type": "linear", "rope_theta": scaling.rope_theta, "factor": scaling.factor}


@dataclass
class NTKConfig(RopeConfig):
    name: str = "ntk"  # fixed by the preset (rope=ntk)

    rule: ClassVar[str] = "NTK-aware base: base * s^(d/(d-2))"

    def validate(self, geometry: RotaryGeometry | None = None) -> None:
        super().validate(geometry)
        if geometry is not None and geometry.rotary_dim < 4:
            raise ConfigError("model.head_dim", f"ntk needs >= 4 rotary dims (got {geometry.rotary_dim})")

    def _compute(self, geometry: RotaryGeometry) -> RopeScaling:
        return strategies.ntk(geometry.head_dim, geometry.rope_theta, geometry.original_length, self.factor)

    def divisors(self, geometry):
        return strategies.ntk_divisors(geometry.rotary_dim, self.factor), 1.0, {}

    def _export(self, scaling: RopeScaling) -> dict[str, Any]:
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

    def divisors(self, geometry):
        divisors, correction_range = strategies.yarn_divisors(
            geometry.inv_freq(torch.float64),
            geometry.rotary_dim,
            geometry.original_length,
            self.factor,
            beta_fast=self.beta_fast,
            beta_slow=self.beta_slow,
            truncate=self.truncate,
        )
        attention = self.attention_factor
        if attention is None:
            attention = strategies.yarn_attention_factor(self.factor)
        return divisors, attention, {"correction_range": correction_range}

    def _export(self, scaling: RopeScaling) -> dict[str, Any]:
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

    def divisors(self, geometry):
        divisors = strategies.llama3_divisors(
            geometry.inv_freq(torch.float64),
            geometry.original_length,
            self.factor,
            self.low_freq_factor,
            self.high_freq_factor,
        )
        return divisors, 1.0, {}

    def _export(self, scaling: RopeScaling) -> dict[str, Any]:
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
    long_factor`` = the divisors of the default frequencies (the model's own times the
    strategy's, `RotaryGeometry.absolute_divisors`) and ``attention_factor`` the product of the
    model's own and the strategy's (1 for plain RoPE and DPRoPE).

    ``short_mscale``/``long_mscale`` = 1 stop vLLM from applying its own default scale;
    transformers logs them as unrecognized keys and ignores them.
    """
    geometry = scaling.geometry
    factors = [float(x) for x in geometry.absolute_divisors(scaling.scaling_factors).tolist()]
    params: dict[str, Any] = {
        "rope_type": "longrope",
        "rope_theta": scaling.rope_theta,
        "factor": scaling.factor,
        "original_max_position_embeddings": scaling.original_length,
        "short_factor": factors,
        "long_factor": list(factors),
        "attention_factor": geometry.attention_factor * scaling.attention_factor,
        "short_mscale": 1.0,
        "long_mscale": 1.0,
    }
    if geometry.partial_rotary_factor != 1:
        params["partial_rotary_factor"] = geometry.partial_rotary_factor
    return params
