"""Rotary-angle distributions and their disturbance (paper section 3.1, eq. 8;
docs/method-notes.md, sections 3-4).

For frequencies theta'_i and a length N the angles of pair i are phi_{i,m} = (m * theta'_i) mod 2pi,
m = 0 .. N-1. Splitting [0, 2pi) into B equal intervals gives the distribution
P_i(b) = #{m : phi_{i,m} in interval b} / N. The disturbance of an extension is, per pair,
D_i = KL(P_i || P'_i) with the pre-training distribution (theta_i, N = L) first and the extended
one (theta'_i, N = s*L) second; a strategy's total is 1000 x the mean of D_i over the pairs.

Everything is vectorized over pairs and positions (one (pairs, N) tensor and one bincount), so
LLaMA-2 at 16k takes milliseconds, not the tens of seconds of a loop over positions.
"""

from __future__ import annotations

import math

import torch

from dprope.config import ConfigError
from dprope.rope.geometry import RotaryGeometry
from dprope.rope.strategies import RopeScaling

ANGLE_DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_NUM_INTERVALS = 360  # B of the paper's disturbance table and of the reference code
DEFAULT_ANGLE_DTYPE = "float32"  # as the model computes its angles, and the reference code
DISTURBANCE_UNIT = 1000.0
# Guards log(P'/0) as the reference code does: every extended bin starts with float16's smallest
# normal number of counts, so an empty bin costs a large but finite penalty.
EMPTY_BIN_COUNT = torch.finfo(torch.float16).tiny


def check_num_intervals(num_intervals: int) -> None:
    """The rule for B, wherever a config or caller sets it."""
    if num_intervals < 1:
        raise ConfigError("num_intervals", f"must be >= 1 (got {num_intervals})")


def angle_dtype(name: str) -> torch.dtype:
    """The torch dtype of an ``angle_dtype`` name; the rule for that name, wherever it is set."""
    try:
        return ANGLE_DTYPES[name]
    except KeyError:
        raise ConfigError("angle_dtype", f"must be one of {sorted(ANGLE_DTYPES)} (got {name!r})") from None


def angle_counts(inv_freq: torch.Tensor, length: int, num_intervals: int, dtype: torch.dtype) -> torch.Tensor:
    """Counts of rotary angles per interval, shape (pairs, num_intervals), float64.

    ``inv_freq`` (pairs,) are the frequencies; angles are formed and reduced mod 2pi in
    ``dtype`` (float32 mirrors a model's own arithmetic and the reference code).
    """
    if length <= 0:
        raise ConfigError("length", f"must be positive (got {length})")
    check_num_intervals(num_intervals)
    freqs = inv_freq.to(dtype)
    positions = torch.arange(length, dtype=dtype)
    angles = torch.remainder(freqs[:, None] * positions[None, :], 2 * math.pi)  # (pairs, N)
    bins = torch.floor(angles * (num_intervals / (2 * math.pi))).long().clamp_(0, num_intervals - 1)
    offsets = torch.arange(freqs.numel(), dtype=torch.long)[:, None] * num_intervals
    counts = torch.bincount((bins + offsets).flatten(), minlength=freqs.numel() * num_intervals)
    return counts.view(freqs.numel(), num_intervals).to(torch.float64)


def angle_distribution(
    inv_freq: torch.Tensor, length: int, num_intervals: int, dtype: torch.dtype
) -> torch.Tensor:
    """P_i(b), shape (pairs, num_intervals), each row summing to 1."""
    return angle_counts(inv_freq, length, num_intervals, dtype) / length


def kl_per_pair(reference: torch.Tensor, other: torch.Tensor, length: int) -> torch.Tensor:
    """D_i = sum_b P_i(b) log(P_i(b) / P'_i(b)), shape (pairs,).

    ``reference`` is P (pre-training), ``other`` P' (extended, over ``length`` positions). Bins
    with P_i(b) = 0 contribute 0; empty bins of P' hold `EMPTY_BIN_COUNT` / length.
    """
    guarded = torch.clamp(other, min=EMPTY_BIN_COUNT / length)
    terms = torch.where(reference > 0, reference * (reference / guarded).log(), torch.zeros_like(reference))
    return terms.sum(dim=-1)


class DisturbanceAnalyzer:
    """Disturbance of any set of frequencies against one model's pre-training distribution.

    Computes the pre-training distribution (the geometry's own frequencies theta_i over L
    positions) once and compares each strategy's distribution over its target length s*L with it.
    """

    def __init__(
        self,
        geometry: RotaryGeometry,
        num_intervals: int = DEFAULT_NUM_INTERVALS,
        dtype: str = DEFAULT_ANGLE_DTYPE,
    ):
        check_num_intervals(num_intervals)
        self.geometry = geometry
        self.num_intervals = num_intervals
        self.dtype_name = dtype
        self.dtype = angle_dtype(dtype)
        self.original_inv_freq = geometry.inv_freq(self.dtype)
        self.original = angle_distribution(
            self.original_inv_freq, geometry.original_length, num_intervals, self.dtype
        )

    def frequencies(self, scaling: RopeScaling) -> torch.Tensor:
        """The frequencies analysed: a model's own float32 values, or in float64 theta_i / lambda_i
        recomputed from the divisors (the exact mathematics, free of float32 rounding)."""
        if self.dtype == torch.float32:
            return scaling.inv_freq.to(torch.float32)
        return self.geometry.inv_freq(torch.float64) / scaling.scaling_factors.to(torch.float64)

    def distribution(self, scaling: RopeScaling) -> torch.Tensor:
        """P'_i over the target length of ``scaling``, shape (pairs, B)."""
        if scaling.geometry != self.geometry:
            raise ValueError(f"{scaling.name} was computed for {scaling.geometry}, not {self.geometry}")
        return angle_distribution(
            self.frequencies(scaling), scaling.target_length, self.num_intervals, self.dtype
        )

    def per_pair(self, scaling: RopeScaling) -> torch.Tensor:
        """D_i for each pair (float64, shape (pairs,))."""
        return kl_per_pair(self.original, self.distribution(scaling), scaling.target_length)

    @staticmethod
    def total(per_pair: torch.Tensor) -> float:
        """A strategy's disturbance in the paper's unit: 1000 x mean_i D_i."""
        return float(per_pair.mean()) * DISTURBANCE_UNIT
