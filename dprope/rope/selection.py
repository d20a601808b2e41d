"""DPRoPE: per-pair choice of the scaling that least disturbs the rotary-angle distribution
(Wu et al., EMNLP 2024, eq. 8-9; docs/method-notes.md, section 4).

For every pair i and every candidate c (extrapolation ``none`` and interpolation ``pi`` by
default; any other registered strategy may join, at its default parameters and the same factor)
the disturbance D_c(i) = KL(P_i || P^c_i) is computed. Let D_E be extrapolation's and D_best the
smallest among the other candidates:

* threshold rule (``num_interpolated_dims`` unset): pair i takes its best non-extrapolating
  candidate iff D_E(i) - D_best(i) > t, else extrapolates; t = 0 is the per-pair argmin;
* count rule (``num_interpolated_dims`` = k, counted in rotary dimensions, two per pair): the
  k/2 pairs with the largest D_E - D_best take their best candidate, the rest extrapolate.

A chosen pair takes its candidate's divisor lambda_i exactly as that candidate computed it. With
the default two candidates this is exactly the paper's interpolate-or-extrapolate choice. The
result is only a vector of divisors: no inference cost, FlashAttention unaffected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch

from dprope.config import ConfigError
from dprope.rope.analysis import (
    DEFAULT_ANGLE_DTYPE,
    DEFAULT_NUM_INTERVALS,
    DisturbanceAnalyzer,
    check_num_intervals,
)
from dprope.rope.analysis import angle_dtype as check_angle_dtype
from dprope.rope.config import RopeConfig, longrope_parameters
from dprope.rope.geometry import RotaryGeometry
from dprope.rope.strategies import RopeScaling, scaling_result

EXTRAPOLATION = "none"  # the candidate whose disturbance D_E every other one is measured against


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
    candidates: Mapping[str, RopeScaling],
    *,
    num_intervals: int,
    threshold: float,
    num_interpolated_dims: int | None,
    angle_dtype: str,
) -> RopeScaling:
    """The DPRoPE divisors from the candidates' results for one model geometry and factor
    (``candidates`` maps name -> result, `EXTRAPOLATION` among them).

    ``details`` of the result hold the per-pair choice (candidate names), the disturbance of
    every candidate per pair, and the margin D_E - D_best used by both rules.
    """
    names = list(candidates)
    scalings = list(candidates.values())
    geometry, factor = scalings[0].geometry, scalings[0].factor
    if any(s.geometry != geometry or s.factor != factor for s in scalings):
        raise ValueError(f"candidates {names} were computed for different geometries or factors")
    analyzer = DisturbanceAnalyzer(geometry, num_intervals, angle_dtype)
    disturbances = torch.stack([analyzer.per_pair(s) for s in scalings])  # (candidates, pairs)
    extrapolation_index = names.index(EXTRAPOLATION)
    choice, margin = select_pairs(disturbances, extrapolation_index, threshold, num_interpolated_dims)

    all_factors = torch.stack([s.scaling_factors for s in scalings])  # (candidates, pairs)
    scaling_factors = all_factors[choice, torch.arange(geometry.num_pairs)]
    return scaling_result(
        "dprope",
        geometry,
        factor,
        geometry.scaled_inv_freq(scaling_factors),  # exactly what its longrope export gives
        # lambda_i exactly as chosen (recomputing it from float32 frequencies adds rounding noise)
        scaling_factors=scaling_factors,
        choices=[names[i] for i in choice.tolist()],
        candidate_disturbance={name: disturbances[c].tolist() for c, name in enumerate(names)},
        margin=margin.tolist(),
        num_interpolated_dims=2 * int((choice != extrapolation_index).sum()),
    )


@dataclass
class DPRoPEConfig(RopeConfig):
    name: str = "dprope"  # fixed by the preset (rope=dprope)
    num_intervals: int = DEFAULT_NUM_INTERVALS  # B: equal intervals of [0, 2pi) for the angle histograms
    threshold: float = 0.0  # t: scale pair i iff D_E(i) - D_best(i) > t (0 = per-pair argmin)
    num_interpolated_dims: int | None = None  # k rotary dims (2 per pair) to scale; overrides threshold
    candidates: list[str] = field(
        default_factory=lambda: [EXTRAPOLATION, "pi"]
    )  # per-pair choices: registered strategies at their defaults; 'none' required
    angle_dtype: str = DEFAULT_ANGLE_DTYPE  # float32 (as the model and reference code) or float64

    rule: ClassVar[str] = "per-pair minimum disturbance"

    def validate(self, geometry: RotaryGeometry | None = None) -> None:
        from dprope.rope.registry import STRATEGIES

        super().validate(geometry)
        check_num_intervals(self.num_intervals)
        k = self.num_interpolated_dims
        if k is not None and (k < 0 or k % 2):
            raise ConfigError("num_interpolated_dims", f"must be a non-negative even number (got {k})")
        if k is not None and geometry is not None and k > geometry.rotary_dim:
            rotating = "head_dim" if geometry.rotary_dim == geometry.head_dim else "rotary dims"
            bound = f"{rotating}={geometry.rotary_dim}"
            raise ConfigError(
                "num_interpolated_dims",
                f"must be an even number of rotary dimensions in [0, {bound}] (got {k})",
            )
        check_angle_dtype(self.angle_dtype)
        if self.name in self.candidates:
            raise ConfigError("candidates", f"{self.name!r} cannot be its own candidate")
        available = [name for name in STRATEGIES if name != self.name]
        unknown = [c for c in self.candidates if c not in available]
        if unknown:
            raise ConfigError(
                "candidates", f"unknown candidate {unknown[0]!r} (available: {', '.join(available)})"
            )
        names = set(self.candidates)
        if EXTRAPOLATION not in names or len(names) < 2 or len(names) != len(self.candidates):
            raise ConfigError(
                "candidates",
                f"need '{EXTRAPOLATION}' and at least one other, without repeats (got {list(self.candidates)})",
            )

    def candidate_configs(self) -> dict[str, RopeConfig]:
        """Each candidate's config: the registered strategy at its defaults and this factor."""
        from dprope.rope.registry import STRATEGIES

        return {name: STRATEGIES[name](factor=self.factor) for name in self.candidates}

    def compute(self, geometry: RotaryGeometry) -> RopeScaling:
        """The selection among the candidates, each computed for this model (on its own
        frequencies when its RoPE is already scaled)."""
        self.validate(geometry)
        return dprope(
            {name: config.compute(geometry) for name, config in self.candidate_configs().items()},
            num_intervals=self.num_intervals,
            threshold=self.threshold,
            num_interpolated_dims=self.num_interpolated_dims,
            angle_dtype=self.angle_dtype,
        )

    def export(self, scaling: RopeScaling) -> dict[str, Any]:
        """transformers' ``longrope`` type carrying the selected divisors."""
        return longrope_parameters(scaling)

    def analysis_settings(self) -> tuple[int, str]:
        return self.num_intervals, self.angle_dtype

    def with_analysis_settings(self, num_intervals: int, angle_dtype: str) -> DPRoPEConfig:
        return replace(self, num_intervals=num_intervals, angle_dtype=angle_dtype)
