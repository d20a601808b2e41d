"""The rotary geometry of a model: the numbers every strategy and every analysis start from
(docs/method-notes.md, section 1).

`RotaryGeometry` is built once per model (`dprope.model.ModelConfig.geometry` from a preset, or
`dprope.model.checkpoint_geometry` from a checkpoint's config) and its construction is the one
place that checks those numbers; its errors name the preset's keys (``model.head_dim``), wherever
the geometry is built.

Beyond plain RoPE (``theta_i = base ** (-2i/d)`` over ``d`` rotary dimensions) it carries what
transformers calls the model's own rope type: a *partial rotary factor* (only the first
``int(head_dim * partial_rotary_factor)`` dimensions of a head rotate) and a *pre-training
scaling* the model was trained with (Llama-3.1's ``llama3`` type: factor 8 over the pairs of
long wavelength, from 8192 positions to its 131072). `inv_freq` gives the model's *effective*
pre-training frequencies, after its own scaling: the reference of every per-pair divisor
lambda_i and of every pre-training angle distribution, over the model's context L
(``original_length``). A strategy on such a model divides those frequencies further, so its
export carries the product of the model's own divisors and the strategy's
(`absolute_divisors`, `scaled_inv_freq`; `dprope.rope.config`).

Pre-training rope types the strategies compose with: `PRETRAINING_ROPE_TYPES` (static per-pair
frequencies). ``dynamic`` (frequencies that change with the input length), ``longrope``
(two frequency sets switched by length) and any other type are refused in one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dprope.config import ConfigError

# The pre-training rope types a strategy composes with, and the keys each reads besides
# rope_type, rope_theta and partial_rotary_factor (required ones first: REQUIRED_KEYS).
PRETRAINING_ROPE_TYPES: dict[str, tuple[str, ...]] = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"),
    "yarn": (
        "factor",
        "original_max_position_embeddings",
        "beta_fast",
        "beta_slow",
        "attention_factor",
        "truncate",
    ),
}
REQUIRED_KEYS = {
    "default": (),
    "linear": ("factor",),
    "llama3": PRETRAINING_ROPE_TYPES["llama3"],
    "yarn": ("factor", "original_max_position_embeddings"),
}
# transformers' defaults of the optional yarn keys (modeling_rope_utils._compute_yarn_parameters)
YARN_DEFAULTS = {"beta_fast": 32.0, "beta_slow": 1.0, "attention_factor": None, "truncate": True}


def exponents(head_dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """2i/d for i = 0 .. d/2-1, computed the way transformers does (int64 arange, then cast)."""
    return torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype) / head_dim


def default_inv_freq(head_dim: int, rope_theta: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """theta_i = base ** (-2i/d), shape (head_dim/2,). Equal to transformers' ``default`` rope type."""
    return 1.0 / (rope_theta ** exponents(head_dim, dtype))


def inv_freq_from_factors(head_dim: int, rope_theta: float, scaling_factors: torch.Tensor) -> torch.Tensor:
    """theta_i / lambda_i in float32 for divisors of the *default* frequencies, computed as
    transformers' ``longrope`` does: ``1 / (lambda_i * base ** (2i/d))``. A ``longrope`` export of
    these divisors therefore has exactly these values."""
    factors = torch.as_tensor(scaling_factors, dtype=torch.float32)
    return 1.0 / (factors * rope_theta ** exponents(head_dim))


def target_length(original_length: int, factor: float) -> int:
    """The extended context L' = s * L (rounded to a whole number of positions)."""
    return int(round(original_length * factor))


def _frozen(params: Mapping[str, Any] | tuple) -> tuple[tuple[str, Any], ...]:
    items = params.items() if isinstance(params, Mapping) else params
    return tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in items))


@dataclass(frozen=True)
class RotaryGeometry:
    """A model's rotary numbers, checked on construction."""

    head_dim: int  # attention head dimension (model.head_dim)
    rope_theta: float  # RoPE base (model.rope_theta)
    original_length: (
        int  # L: the context the pre-training frequencies serve (model.original_max_position_embeddings)
    )
    partial_rotary_factor: float = 1.0  # share of head_dim that rotates (model.partial_rotary_factor)
    rope_type: str = "default"  # the model's own pre-training rope type (model.rope_type)
    rope_scaling: Any = ()  # its parameters (model.rope_scaling): a mapping, kept as sorted (key, value) pairs

    def __post_init__(self) -> None:
        if not (isinstance(self.head_dim, int) and self.head_dim > 0):
            raise ConfigError("model.head_dim", f"must be a positive even number (got {self.head_dim})")
        if not (0 < self.partial_rotary_factor <= 1):
            raise ConfigError(
                "model.partial_rotary_factor", f"must be in (0, 1] (got {self.partial_rotary_factor})"
            )
        rotary = self.rotary_dim
        if rotary <= 0 or rotary % 2:
            field = "model.head_dim" if self.partial_rotary_factor == 1 else "model.partial_rotary_factor"
            raise ConfigError(
                field,
                f"must be a positive even number (got {self.head_dim})"
                if field == "model.head_dim"
                else f"{self.partial_rotary_factor} x head_dim {self.head_dim} = {rotary} rotary dims, not a "
                "positive even number",
            )
        if not (math.isfinite(self.rope_theta) and self.rope_theta > 1):
            raise ConfigError("model.rope_theta", f"must be a finite number > 1 (got {self.rope_theta})")
        object.__setattr__(self, "rope_theta", float(self.rope_theta))
        object.__setattr__(self, "partial_rotary_factor", float(self.partial_rotary_factor))
        if not (isinstance(self.original_length, int) and self.original_length > 0):
            raise ConfigError(
                "model.original_max_position_embeddings", f"must be positive (got {self.original_length})"
            )
        object.__setattr__(self, "rope_scaling", _frozen(self.rope_scaling))
        self._check_pretraining()

    def _check_pretraining(self) -> None:
        kind = self.rope_type
        if kind not in PRETRAINING_ROPE_TYPES:
            raise ConfigError(
                "model.rope_type",
                f"the strategies cannot compose with rope type {kind!r} (supported: "
                f"{', '.join(PRETRAINING_ROPE_TYPES)}: static per-pair frequencies)",
            )
        params = dict(self.rope_scaling)
        known = PRETRAINING_ROPE_TYPES[kind]
        for key in params:
            if key not in known:
                raise ConfigError(
                    "model.rope_scaling",
                    f"{key!r} is not a parameter of rope type {kind!r} that the strategies compose with "
                    f"(known: {', '.join(known) or 'none'})",
                )
        for key in REQUIRED_KEYS[kind]:
            if params.get(key) is None:
                raise ConfigError("model.rope_scaling", f"rope type {kind!r} needs {key!r}")
        if kind == "default":
            return
        factor = params["factor"]
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 1):
            raise ConfigError("model.rope_scaling", f"factor must be a finite number >= 1 (got {factor})")
        if "original_max_position_embeddings" in known:
            length = params["original_max_position_embeddings"]
            if not (isinstance(length, int) and 0 < length <= self.original_length):
                raise ConfigError(
                    "model.rope_scaling",
                    f"original_max_position_embeddings must be a positive whole number of positions, at most "
                    f"L = {self.original_length} (got {length})",
                )
        if kind == "llama3" and not 0 < params["low_freq_factor"] < params["high_freq_factor"]:
            raise ConfigError("model.rope_scaling", "llama3 needs 0 < low_freq_factor < high_freq_factor")
        if kind == "yarn":
            full = self.pretraining_parameters
            if not 0 < full["beta_slow"] < full["beta_fast"]:
                raise ConfigError("model.rope_scaling", "yarn needs 0 < beta_slow < beta_fast")

    @property
    def rotary_dim(self) -> int:
        """d: the dimensions of a head that rotate, int(head_dim x partial_rotary_factor)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def num_pairs(self) -> int:
        """Rotary pairs i = 0 .. d/2-1, each rotating dimensions 2i and 2i+1."""
        return self.rotary_dim // 2

    @property
    def is_plain(self) -> bool:
        """Plain RoPE: the model's own frequencies are the default ones (no pre-training scaling)."""
        return self.rope_type == "default"

    @property
    def pretraining_parameters(self) -> dict[str, Any]:
        """The pre-training scaling's parameters, optional ones at transformers' defaults."""
        params = dict(self.rope_scaling)
        if self.rope_type == "yarn":
            params = {**YARN_DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
        return params

    def rotary_base(self) -> RotaryGeometry:
        """The plain geometry of the rotating dimensions: what a strategy's native formula sees."""
        return RotaryGeometry(self.rotary_dim, self.rope_theta, self.original_length)

    def default_inv_freq(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """base ** (-2i/d): the frequencies before any scaling, shape (num_pairs,)."""
        return default_inv_freq(self.rotary_dim, self.rope_theta, dtype)

    def _pretraining(self):
        """The pre-training scaling as one of the strategies computes it on the plain geometry
        (imported here: the strategies import this module)."""
        from dprope.rope import strategies

        p = self.pretraining_parameters
        d, base = self.rotary_dim, self.rope_theta
        if self.rope_type == "linear":
            return strategies.pi(d, base, self.original_length, p["factor"])
        if self.rope_type == "llama3":
            return strategies.llama3(
                d,
                base,
                p["original_max_position_embeddings"],
                p["factor"],
                low_freq_factor=p["low_freq_factor"],
                high_freq_factor=p["high_freq_factor"],
            )
        return strategies.yarn(
            d,
            base,
            p["original_max_position_embeddings"],
            p["factor"],
            beta_fast=p["beta_fast"],
            beta_slow=p["beta_slow"],
            attention_factor=p["attention_factor"],
            truncate=p["truncate"],
        )

    def pretraining_divisors(self) -> torch.Tensor:
        """The model's own divisors of the default frequencies (float64, shape (num_pairs,)), in
        exact arithmetic: ones for plain RoPE."""
        from dprope.rope import strategies

        if self.is_plain:
            return torch.ones(self.num_pairs, dtype=torch.float64)
        p = self.pretraining_parameters
        default = self.default_inv_freq(torch.float64)
        if self.rope_type == "linear":
            return strategies.pi_divisors(self.num_pairs, p["factor"])
        if self.rope_type == "llama3":
            return strategies.llama3_divisors(
                default,
                p["original_max_position_embeddings"],
                p["factor"],
                p["low_freq_factor"],
                p["high_freq_factor"],
            )
        divisors, _ = strategies.yarn_divisors(
            default,
            self.rotary_dim,
            p["original_max_position_embeddings"],
            p["factor"],
            beta_fast=p["beta_fast"],
            beta_slow=p["beta_slow"],
            truncate=p["truncate"],
        )
        return divisors

    @property
    def attention_factor(self) -> float:
        """The cos/sin scale of the model's own RoPE (YaRN's 0.1 ln s + 1 for a yarn checkpoint)."""
        return 1.0 if self.is_plain else self._pretraining().attention_factor

    def inv_freq(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The model's effective pre-training frequencies theta_i, shape (num_pairs,): float32
        exactly as transformers computes them for the model's rope type, float64 for the exact
        mathematics."""
        if self.is_plain:
            return self.default_inv_freq(dtype)
        if dtype == torch.float32:
            return self._pretraining().inv_freq
        return self.default_inv_freq(dtype) / self.pretraining_divisors().to(dtype)

    def absolute_divisors(self, divisors: torch.Tensor) -> torch.Tensor:
        """Divisors of the default frequencies for ``divisors`` of this model's own frequencies:
        the model's own times the strategy's (float64)."""
        return self.pretraining_divisors() * torch.as_tensor(divisors, dtype=torch.float64)

    def scaled_inv_freq(self, divisors: torch.Tensor) -> torch.Tensor:
        """theta_i / lambda_i in float32 as a ``longrope`` export of `absolute_divisors` gives them."""
        return inv_freq_from_factors(self.rotary_dim, self.rope_theta, self.absolute_divisors(divisors))

    def native_parameters(self) -> dict[str, Any]:
        """The model's own transformers ``rope_parameters`` (its pre-training RoPE, unscaled by any
        strategy)."""
        params: dict[str, Any] = {"rope_type": self.rope_type, "rope_theta": self.rope_theta}
        params.update({k: list(v) if isinstance(v, tuple) else v for k, v in self.rope_scaling})
        if self.partial_rotary_factor != 1:
            params["partial_rotary_factor"] = self.partial_rotary_factor
        return params

    def describe(self) -> str:
        """One phrase for tables and logs: ``head_dim 128, base 500000, llama3 (factor 8, ...), L 131072``."""
        text = f"head_dim {self.head_dim}"
        if self.partial_rotary_factor != 1:
            text += f" (rotary {self.rotary_dim})"
        text += f", base {self.rope_theta:g}"
        if not self.is_plain:
            params = ", ".join(
                f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.rope_scaling
            )
            text += f", pre-training rope {self.rope_type} ({params})"
        return text + f", L {self.original_length}"

    def target_length(self, factor: float) -> int:
        """L' = s * L positions."""
        return target_length(self.original_length, factor)
