"""RoPE scaling strategies as pure functions of explicit numbers (docs/method-notes.md, sections 1-2).

Every strategy takes the rotary geometry of a model (``head_dim``, ``rope_theta``, the
pre-training length ``original_length`` = L) and the scaling factor ``factor`` = s, plus its own
parameters, and returns a `RopeScaling`: the per-pair divisors ``lambda_i`` (theta'_i =
theta_i / lambda_i), the float32 inverse frequencies a model uses, and the cos/sin attention
factor. `pi`, `yarn` and `llama3` reproduce transformers' ``linear``, ``yarn`` and ``llama3``
rope types operation for operation, so the frequencies are equal at float32 precision.

The DPRoPE strategy lives in `dprope.rope.selection`; the registry that names them all is
`dprope.rope.registry.STRATEGIES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from dprope.config import ConfigError


@dataclass(frozen=True)
class RopeScaling:
    """The outcome of a strategy for one model geometry.

    ``scaling_factors`` (float64, shape (head_dim/2,)) are the divisors lambda_i;
    ``inv_freq`` (float32, same shape) the frequencies theta_i / lambda_i exactly as a model
    computes them; ``rope_theta`` the base those frequencies derive from (changed only by NTK).
    """

    name: str
    head_dim: int
    rope_theta: float
    original_length: int
    factor: float
    scaling_factors: torch.Tensor
    inv_freq: torch.Tensor
    attention_factor: float = 1.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def num_pairs(self) -> int:
        return self.head_dim // 2

    @property
    def target_length(self) -> int:
        return target_length(self.original_length, self.factor)


def target_length(original_length: int, factor: float) -> int:
    """The extended context L' = s * L (rounded to a whole number of positions)."""
    return int(round(original_length * factor))


def check_geometry(head_dim: int, rope_theta: float, original_length: int, factor: float) -> None:
    """Raise a `ConfigError` naming the first invalid number."""
    if head_dim <= 0 or head_dim % 2:
        raise ConfigError("head_dim", f"must be a positive even number (got {head_dim})")
    if not rope_theta > 1:
        raise ConfigError("rope_theta", f"must be > 1 (got {rope_theta})")
    if original_length <= 0:
        raise ConfigError("original_max_position_embeddings", f"must be positive (got {original_length})")
    if not (math.isfinite(factor) and factor >= 1):
        raise ConfigError("factor", f"must be a finite number >= 1 (got {factor})")


def _exponents(head_dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """2i/d for i = 0 .. d/2-1, computed the way transformers does (int64 arange, then cast)."""
    return torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype) / head_dim


def default_inv_freq(head_dim: int, rope_theta: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """theta_i = base ** (-2i/d), shape (head_dim/2,). Equal to transformers' ``default`` rope type."""
    return 1.0 / (rope_theta ** _exponents(head_dim, dtype))


def _scaling(
    name: str,
    head_dim: int,
    rope_theta: float,
    original_length: int,
    factor: float,
    inv_freq: torch.Tensor,
    attention_factor: float = 1.0,
    scaling_factors: torch.Tensor | None = None,
    **details: Any,
) -> RopeScaling:
    """Package frequencies with their divisors lambda_i; unless given exactly, lambda_i is
    recovered as theta_i / theta'_i."""
    if scaling_factors is None:
        scaling_factors = default_inv_freq(head_dim, rope_theta, torch.float64) / inv_freq.to(torch.float64)
    return RopeScaling(
        name=name,
        head_dim=head_dim,
        rope_theta=float(rope_theta),
        original_length=int(original_length),
        factor=float(factor),
        scaling_factors=scaling_factors.to(torch.float64),
        inv_freq=inv_freq.to(torch.float32),
        attention_factor=float(attention_factor),
        details=details,
    )


def inv_freq_from_factors(head_dim: int, rope_theta: float, scaling_factors: torch.Tensor) -> torch.Tensor:
    """theta_i / lambda_i in float32, computed as transformers' ``longrope`` does:
    ``1 / (lambda_i * base ** (2i/d))``. The exported DPRoPE model therefore has these exact values."""
    factors = torch.as_tensor(scaling_factors, dtype=torch.float32)
    return 1.0 / (factors * rope_theta ** _exponents(head_dim))


def none(head_dim: int, rope_theta: float, original_length: int, factor: float) -> RopeScaling:
    """Plain extrapolation: lambda_i = 1 (the original model run past L)."""
    check_geometry(head_dim, rope_theta, original_length, factor)
    inv_freq = default_inv_freq(head_dim, rope_theta)
    ones = torch.ones(head_dim // 2, dtype=torch.float64)
    return _scaling("none", head_dim, rope_theta, original_length, factor, inv_freq, scaling_factors=ones)


def pi(head_dim: int, rope_theta: float, original_length: int, factor: float) -> RopeScaling:
    """Position Interpolation (Chen et al., 2023): lambda_i = s for every pair.

    Built on the baseline as transformers' ``linear`` type is: default frequencies divided by s.
    """
    check_geometry(head_dim, rope_theta, original_length, factor)
    inv_freq = default_inv_freq(head_dim, rope_theta) / factor
    factors = torch.full((head_dim // 2,), float(factor), dtype=torch.float64)
    return _scaling("pi", head_dim, rope_theta, original_length, factor, inv_freq, scaling_factors=factors)


def ntk_base(head_dim: int, rope_theta: float, factor: float) -> float:
    """The "NTK-aware" base: base * s ** (d / (d - 2))."""
    return float(rope_theta * factor ** (head_dim / (head_dim - 2)))


def ntk(head_dim: int, rope_theta: float, original_length: int, factor: float) -> RopeScaling:
    """Static NTK-aware scaling: the default rule with the base raised to ``ntk_base``."""
    check_geometry(head_dim, rope_theta, original_length, factor)
    if head_dim < 4:
        raise ConfigError("head_dim", f"ntk needs head_dim >= 4 (got {head_dim})")
    new_base = ntk_base(head_dim, rope_theta, factor)
    inv_freq = default_inv_freq(head_dim, new_base)
    return _scaling("ntk", head_dim, rope_theta, original_length, factor, inv_freq, ntk_rope_theta=new_base)


def yarn_attention_factor(factor: float) -> float:
    """YaRN's cos/sin scale 0.1 * ln(s) + 1 (1 when s <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def _yarn_correction_dim(
    num_rotations: float, head_dim: int, rope_theta: float, original_length: int
) -> float:
    """The (fractional) dimension index whose pair makes `num_rotations` turns over L positions."""
    return (head_dim * math.log(original_length / (num_rotations * 2 * math.pi))) / (2 * math.log(rope_theta))


def yarn(
    head_dim: int,
    rope_theta: float,
    original_length: int,
    factor: float,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    attention_factor: float | None = None,
    truncate: bool = True,
) -> RopeScaling:
    """YaRN (Peng et al., 2023), as transformers' ``yarn`` rope type computes it.

    Pairs making more than ``beta_fast`` rotations over L extrapolate, fewer than ``beta_slow``
    interpolate; between them a linear ramp over the dimension index blends theta_i / s and
    theta_i. The correction range is floored/ceiled when ``truncate``.
    """
    check_geometry(head_dim, rope_theta, original_length, factor)
    if not beta_fast > beta_slow > 0:
        raise ConfigError("beta_fast", f"need beta_fast > beta_slow > 0 (got {beta_fast}, {beta_slow})")
    if attention_factor is not None and attention_factor <= 0:
        raise ConfigError("attention_factor", f"must be positive (got {attention_factor})")
    low = _yarn_correction_dim(beta_fast, head_dim, rope_theta, original_length)
    high = _yarn_correction_dim(beta_slow, head_dim, rope_theta, original_length)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp

    pos_freqs = rope_theta ** _exponents(head_dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    ramp = torch.clamp((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation_weight = 1 - ramp
    inv_freq = (
        inv_freq_interpolation * (1 - extrapolation_weight) + inv_freq_extrapolation * extrapolation_weight
    )
    if attention_factor is None:
        attention_factor = yarn_attention_factor(factor)
    return _scaling(
        "yarn",
        head_dim,
        rope_theta,
        original_length,
        factor,
        inv_freq,
        attention_factor,
        correction_range=(low, high),
    )


def llama3(
    head_dim: int,
    rope_theta: float,
    original_length: int,
    factor: float,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
) -> RopeScaling:
    """Llama 3.1's rule, as transformers' ``llama3`` rope type computes it.

    Wavelengths shorter than L / high_freq_factor extrapolate, longer than L / low_freq_factor
    interpolate by s, and a smooth blend covers the band between.
    """
    check_geometry(head_dim, rope_theta, original_length, factor)
    if not high_freq_factor > low_freq_factor > 0:
        raise ConfigError(
            "high_freq_factor",
            f"need high_freq_factor > low_freq_factor > 0 (got {high_freq_factor}, {low_freq_factor})",
        )
    inv_freq = default_inv_freq(head_dim, rope_theta)
    low_freq_wavelen = original_length / low_freq_factor
    high_freq_wavelen = original_length / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_length / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    scaled = torch.where(is_medium, smoothed, scaled)
    return _scaling("llama3", head_dim, rope_theta, original_length, factor, scaled)
