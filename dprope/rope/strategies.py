"""RoPE scaling strategies as pure functions of explicit numbers (docs/method-notes.md, sections 1-2).

Every strategy takes the rotary geometry of a model (``head_dim``, ``rope_theta``, the
pre-training length ``original_length`` = L), the scaling factor ``factor`` = s and its own
parameters (no defaults: those live in the strategy's config class alone), and returns a
`RopeScaling`: the per-pair divisors ``lambda_i`` (theta'_i = theta_i / lambda_i), the float32
inverse frequencies a model uses, and the cos/sin attention factor. `pi`, `yarn` and `llama3`
reproduce transformers' ``linear``, ``yarn`` and ``llama3`` rope types operation for operation,
so the frequencies are equal at float32 precision.

A model whose own RoPE is already scaled (Llama-3.1) is extended from its effective frequencies:
the ``*_divisors`` functions at the end give each rule's lambda_i for any reference frequencies
(on plain RoPE they equal the functions above).

The functions check nothing but the geometry (by building a `RotaryGeometry`): a strategy's own
parameters are checked once, by its config class (`dprope.rope.config`), which calls these
functions. The DPRoPE selection lives in `dprope.rope.selection`; the registry that names every
strategy is `dprope.rope.registry.STRATEGIES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from dprope.config import ConfigError
from dprope.rope.geometry import RotaryGeometry, default_inv_freq, exponents, inv_freq_from_factors

__all__ = [
    "RopeScaling",
    "default_inv_freq",
    "inv_freq_from_factors",
    "llama3",
    "llama3_divisors",
    "none",
    "ntk",
    "ntk_divisors",
    "pi",
    "pi_divisors",
    "yarn",
    "yarn_divisors",
]


@dataclass(frozen=True)
class RopeScaling:
    """The outcome of a strategy for one model geometry.

    ``scaling_factors`` (float64, shape (num_pairs,)) are the divisors lambda_i of the geometry's
    own frequencies; ``inv_freq`` (float32, same shape) the frequencies theta_i / lambda_i
    exactly as a model computes them; ``details`` what a strategy adds (NTK's raised base,
    YaRN's correction range, DPRoPE's per-pair choices).
    """

    name: str
    geometry: RotaryGeometry
    factor: float
    scaling_factors: torch.Tensor
    inv_freq: torch.Tensor
    attention_factor: float = 1.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.geometry.head_dim

    @property
    def rope_theta(self) -> float:
        return self.geometry.rope_theta

    @property
    def original_length(self) -> int:
        return self.geometry.original_length

    @property
    def num_pairs(self) -> int:
        return self.geometry.num_pairs

    @property
    def target_length(self) -> int:
        return self.geometry.target_length(self.factor)


def scaling_result(
    name: str,
    geometry: RotaryGeometry,
    factor: float,
    inv_freq: torch.Tensor,
    attention_factor: float = 1.0,
    scaling_factors: torch.Tensor | None = None,
    **details: Any,
) -> RopeScaling:
    """Package frequencies with their divisors lambda_i; unless given exactly, lambda_i is
    recovered as theta_i / theta'_i against the geometry's own frequencies."""
    if scaling_factors is None:
        scaling_factors = geometry.inv_freq(torch.float64) / inv_freq.to(torch.float64)
    return RopeScaling(
        name=name,
        geometry=geometry,
        factor=float(factor),
        scaling_factors=scaling_factors.to(torch.float64),
        inv_freq=inv_freq.to(torch.float32),
        attention_factor=float(attention_factor),
        details=details,
    )


def none(head_dim: int, rope_theta: float, original_length: int, factor: float) -> RopeScaling:
    """Plain extrapolation: lambda_i = 1 (the original model run past L)."""
    geometry = RotaryGeometry(head_dim, rope_theta, original_length)
    ones = torch.ones(geometry.num_pairs, dtype=torch.float64)
    return scaling_result("none", geometry, factor, geometry.inv_freq(), scaling_factors=ones)


def pi(head_dim: int, rope_theta: float, original_length: int, factor: float) -> RopeScaling:
    """Position Interpolation (Chen et al., 2023): lambda_i = s for every pair.

    Built on the baseline as transformers' ``linear`` type is: default frequencies divided by s.
    """
    geometry = RotaryGeometry(head_dim, rope_theta, original_length)
    factors = torch.full((geometry.num_pairs,), float(factor), dtype=torch.float64)
    return scaling_result("pi", geometry, factor, geometry.inv_freq() / factor, scaling_factors=factors)


def ntk_base(head_dim: int, rope_theta: float, factor: float) -> float:
    """The "NTK-aware" base: base * s ** (d / (d - 2))."""
    return float(rope_theta * factor ** (head_dim / (head_dim - 2)))


def ntk(head_dim: int, rope_theta: float, original_length: int, factor: float) -> RopeScaling:
    """Static NTK-aware scaling: the default rule with the base raised to ``ntk_base``
    (needs head_dim >= 4, which its config checks)."""
    geometry = RotaryGeometry(head_dim, rope_theta, original_length)
    new_base = ntk_base(head_dim, rope_theta, factor)
    inv_freq = default_inv_freq(head_dim, new_base)
    return scaling_result("ntk", geometry, factor, inv_freq, ntk_rope_theta=new_base)


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
    *,
    beta_fast: float,
    beta_slow: float,
    attention_factor: float | None,
    truncate: bool,
) -> RopeScaling:
    """YaRN (Peng et al., 2023), as transformers' ``yarn`` rope type computes it.

    Pairs making more than ``beta_fast`` rotations over L extrapolate, fewer than ``beta_slow``
    interpolate; between them a linear ramp over the dimension index blends theta_i / s and
    theta_i. The correction range is floored/ceiled when ``truncate``; ``attention_factor``
    None means `yarn_attention_factor`.
    """
    geometry = RotaryGeometry(head_dim, rope_theta, original_length)
    low = _yarn_correction_dim(beta_fast, head_dim, rope_theta, original_length)
    high = _yarn_correction_dim(beta_slow, head_dim, rope_theta, original_length)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp

    pos_freqs = rope_theta ** exponents(head_dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    ramp = torch.clamp((torch.arange(geometry.num_pairs, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation_weight = 1 - ramp
    inv_freq = (
        inv_freq_interpolation * (1 - extrapolation_weight) + inv_freq_extrapolation * extrapolation_weight
    )
    if attention_factor is None:
        attention_factor = yarn_attention_factor(factor)
    return scaling_result("yarn", geometry, factor, inv_freq, attention_factor, correction_range=(low, high))


def llama3(
    head_dim: int,
    rope_theta: float,
    original_length: int,
    factor: float,
    *,
    low_freq_factor: float,
    high_freq_factor: float,
) -> RopeScaling:
    """Llama 3.1's rule, as transformers' ``llama3`` rope type computes it.

    Wavelengths shorter than L / high_freq_factor extrapolate, longer than L / low_freq_factor
    interpolate by s, and a smooth blend covers the band between.
    """
    geometry = RotaryGeometry(head_dim, rope_theta, original_length)
    inv_freq = geometry.inv_freq()
    low_freq_wavelen = original_length / low_freq_factor
    high_freq_wavelen = original_length / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_length / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    scaled = torch.where(is_medium, smoothed, scaled)
    return scaling_result("llama3", geometry, factor, scaled)


# ---- the same rules on any reference frequencies -------------------------------------------
# A model whose own RoPE is already scaled (Llama-3.1's llama3 frequencies) is extended from its
# *effective* frequencies theta_i over its context L (`RotaryGeometry.inv_freq`). These functions
# give each strategy's divisors lambda_i of such a reference, in float64: the rules above in terms
# of the reference's own rotations and wavelengths. On plain RoPE they equal the divisors of the
# functions above (tests check it); `dprope.rope.config` uses them where the geometry is not plain.


def pi_divisors(num_pairs: int, factor: float) -> torch.Tensor:
    """PI: lambda_i = s."""
    return torch.full((num_pairs,), float(factor), dtype=torch.float64)


def ntk_divisors(rotary_dim: int, factor: float) -> torch.Tensor:
    """NTK-aware: the per-pair ratio of the raised base, lambda_i = s ** (2i / (d - 2))."""
    i = torch.arange(rotary_dim // 2, dtype=torch.float64)
    return float(factor) ** (2 * i / (rotary_dim - 2))


def _crossing(log_rotations: torch.Tensor, log_value: float) -> float:
    """The fractional pair index at which log-rotations, linear between neighbouring pairs and
    continued linearly past the ends, equal ``log_value`` (log-rotations strictly decreasing).

    For plain RoPE log-rotations are linear in the index, so this is YaRN's closed-form
    correction dimension exactly."""
    lr = log_rotations.tolist()
    j = sum(1 for x in lr if x >= log_value) - 1
    j = min(max(j, 0), len(lr) - 2)
    return j + (lr[j] - log_value) / (lr[j] - lr[j + 1])


def yarn_divisors(
    reference: torch.Tensor,
    rotary_dim: int,
    original_length: int,
    factor: float,
    *,
    beta_fast: float,
    beta_slow: float,
    truncate: bool,
) -> tuple[torch.Tensor, tuple[float, float]]:
    """YaRN's divisors of ``reference`` frequencies over L, and its correction range.

    As transformers' ``yarn``: a linear ramp over the pair index between the indices where a
    pair makes ``beta_fast`` and ``beta_slow`` rotations over L (floored/ceiled when
    ``truncate``, clamped to [0, d-1]); pairs below the range extrapolate, above it interpolate.
    The indices are found on the reference's own rotations (which must fall with the index).
    """
    reference = reference.to(torch.float64)
    if reference.numel() < 2:
        raise ConfigError(
            "model.head_dim", "yarn on a scaled pre-training RoPE needs at least 2 rotary pairs"
        )
    if not bool(torch.all(reference[1:] < reference[:-1])):
        raise ConfigError(
            "model.rope_scaling", "yarn needs pre-training frequencies that fall with the pair index"
        )
    log_rotations = torch.log(reference * original_length / (2 * math.pi))
    low = _crossing(log_rotations, math.log(beta_fast))
    high = _crossing(log_rotations, math.log(beta_slow))
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = torch.clamp((torch.arange(reference.numel(), dtype=torch.float64) - low) / (high - low), 0, 1)
    # theta'_i = theta_i / s * ramp + theta_i * (1 - ramp)
    return 1.0 / (ramp / factor + (1 - ramp)), (low, high)


def llama3_divisors(
    reference: torch.Tensor,
    original_length: int,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
) -> torch.Tensor:
    """Llama 3.1's bands on ``reference`` frequencies over L: wavelengths below L /
    high_freq_factor extrapolate, above L / low_freq_factor interpolate by s, a smooth blend
    between."""
    reference = reference.to(torch.float64)
    wavelen = 2 * math.pi / reference
    scaled = torch.where(wavelen > original_length / low_freq_factor, reference / factor, reference)
    smooth = (original_length / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < original_length / high_freq_factor) * ~(
        wavelen > original_length / low_freq_factor
    )
    return reference / torch.where(is_medium, smoothed, scaled)
