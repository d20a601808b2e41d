"""DPRoPE: per-pair choice of the scaling that least disturbs the rotary-angle distribution
(Wu et al., EMNLP 2024, eq. 8-9; docs/method-notes.md, section 4).

For every pair i and every candidate c (extrapolation ``none`` and interpolation ``pi`` by
default; ``ntk``, ``yarn`` and ``llama3`` may join) the disturbance D_c(i) = KL(P_i || P^c_i) is
computed. Let D_E be extrapolation's and D_best the smallest among the other candidates:

* threshold rule (``num_interpolated_dims`` unset): pair i takes its best non-extrapolating
  candidate iff D_E(i) - D_best(i) > t, else extrapolates; t = 0 is the per-pair argmin;
* count rule (``num_interpolated_dims`` = k, counted in rotary dimensions, two per pair): the
  k/2 pairs with the largest D_E - D_best take their best candidate, the rest extrapolate.

With the default two candidates this is exactly the paper's interpolate-or-extrapolate choice.
The result is only a vector of divisors lambda_i: no inference cost, FlashAttention unaffected.
"""

from __future__ import annotations

import torch

from dprope.config import ConfigError
from dprope.rope.analysis import DisturbanceAnalyzer
from dprope.rope.strategies import (
    RopeScaling,
    _scaling,
    check_geometry,
    inv_freq_from_factors,
    llama3,
    none,
    ntk,
    pi,
    yarn,
)

EXTRAPOLATION = "none"
# Strategies a pair may borrow its divisor from, each with its default parameters.
CANDIDATES = {"none": none, "pi": pi, "ntk": ntk, "yarn": yarn, "llama3": llama3}


def select_pairs(
    disturbances: torch.Tensor,
    extrapolation_index: int,
    threshold: float = 0.0,
    num_interpolated_dims: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen candidate index per pair, and the margin D_E - D_best (both shape (pairs,)).

    ``disturbances`` has shape (candidates, pairs); row ``extrapolation_index`` is D_E.
    """
    num_candidates, num_pairs = disturbances.shape
    others = [c for c in range(num_candidates) if c != extrapolation_index]
    other_d = disturbances[others]  # (candidates - 1, pairs)
    best_other = torch.tensor(others)[other_d.argmin(dim=0)]  # (pairs,)
    margin = disturbances[extrapolation_index] - other_d.min(dim=0).values  # D_E - D_best
    if num_interpolated_dims is None:
        scaled = margin > threshold
    else:
        scaled = torch.zeros(num_pairs, dtype=torch.bool)
        order = torch.argsort(margin, descending=True, stable=True)
        scaled[order[: num_interpolated_dims // 2]] = True
    choice = torch.where(scaled, best_other, torch.full_like(best_other, extrapolation_index))
    return choice, margin


def dprope(
    head_dim: int,
    rope_theta: float,
    original_length: int,
    factor: float,
    num_intervals: int = 360,
    threshold: float = 0.0,
    num_interpolated_dims: int | None = None,
    candidates: tuple[str, ...] | list[str] = ("none", "pi"),
    angle_dtype: str = "float32",
) -> RopeScaling:
    """The DPRoPE divisors for one model geometry and factor.

    ``details`` of the result hold the per-pair choice (candidate names), the disturbance of
    every candidate per pair, and the margin D_E - D_best used by both rules.
    """
    check_geometry(head_dim, rope_theta, original_length, factor)
    check_selection(head_dim, num_intervals, num_interpolated_dims, candidates)
    analyzer = DisturbanceAnalyzer(head_dim, rope_theta, original_length, num_intervals, angle_dtype)
    names = list(candidates)
    scalings = [CANDIDATES[name](head_dim, rope_theta, original_length, factor) for name in names]
    disturbances = torch.stack([analyzer.per_pair(s) for s in scalings])  # (candidates, pairs)
    extrapolation_index = names.index(EXTRAPOLATION)
    choice, margin = select_pairs(disturbances, extrapolation_index, threshold, num_interpolated_dims)

    all_factors = torch.stack([s.scaling_factors for s in scalings])  # (candidates, pairs)
    pairs = torch.arange(head_dim // 2)
    scaling_factors = all_factors[choice, pairs]
    # Interpolation and extrapolation divisors are exactly s and 1; keep them exact so the
    # exported longrope factors read as the paper describes.
    scaling_factors = torch.where(
        choice == extrapolation_index, torch.ones_like(scaling_factors), scaling_factors
    )
    if "pi" in names:
        scaling_factors = torch.where(
            choice == names.index("pi"), torch.full_like(scaling_factors, factor), scaling_factors
        )
    inv_freq = inv_freq_from_factors(head_dim, rope_theta, scaling_factors)
    return _scaling(
        "dprope",
        head_dim,
        rope_theta,
        original_length,
        factor,
        inv_freq,
        # lambda_i exactly as chosen (recomputing it from float32 frequencies adds rounding noise)
        scaling_factors=scaling_factors,
        choices=[names[i] for i in choice.tolist()],
        candidate_disturbance={name: disturbances[c].tolist() for c, name in enumerate(names)},
        margin=margin.tolist(),
        num_interpolated_dims=2 * int((choice != extrapolation_index).sum()),
    )


def check_selection(
    head_dim: int,
    num_intervals: int,
    num_interpolated_dims: int | None,
    candidates: tuple[str, ...] | list[str],
) -> None:
    """Raise a `ConfigError` naming the first invalid DPRoPE parameter."""
    if num_intervals < 1:
        raise ConfigError("num_intervals", f"must be >= 1 (got {num_intervals})")
    if num_interpolated_dims is not None:
        k = num_interpolated_dims
        if k < 0 or k % 2 or k > head_dim:
            raise ConfigError(
                "num_interpolated_dims",
                f"must be an even number of rotary dimensions in [0, head_dim={head_dim}] (got {k})",
            )
    check_candidates(candidates)


def check_candidates(candidates: tuple[str, ...] | list[str]) -> None:
    """Known names, extrapolation among them, at least one alternative, no repeats."""
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise ConfigError(
            "candidates", f"unknown candidate {unknown[0]!r} (available: {', '.join(CANDIDATES)})"
        )
    if EXTRAPOLATION not in candidates or len(set(candidates)) < 2 or len(set(candidates)) != len(candidates):
        raise ConfigError(
            "candidates",
            f"need '{EXTRAPOLATION}' and at least one other, without repeats (got {list(candidates)})",
        )
