"""Angle histograms and KL against a direct, loop-based reading of the definition."""

from __future__ import annotations

import math

import pytest
import torch

from dprope.config import ConfigError
from dprope.rope.analysis import (
    EMPTY_BIN_COUNT,
    DisturbanceAnalyzer,
    angle_counts,
    angle_distribution,
    kl_per_pair,
)
from dprope.rope.geometry import RotaryGeometry
from dprope.rope.strategies import default_inv_freq, none, pi

LLAMA2 = RotaryGeometry(128, 10000.0, 4096)


def loop_counts(inv_freq, length, num_intervals):
    """The definition read literally: one angle at a time, in float32 (as the reference does)."""
    counts = torch.zeros(len(inv_freq), num_intervals, dtype=torch.float64)
    two_pi = torch.tensor(2 * math.pi, dtype=torch.float32)
    for i, theta in enumerate(inv_freq.to(torch.float32)):
        for m in range(length):
            angle = torch.remainder(theta * torch.tensor(float(m), dtype=torch.float32), two_pi)
            b = int(torch.floor(angle * (num_intervals / (2 * math.pi))))
            counts[i, min(b, num_intervals - 1)] += 1
    return counts


@pytest.mark.parametrize("num_intervals", [1, 7, 90, 360])
def test_vectorized_counts_equal_the_loop(num_intervals):
    inv = default_inv_freq(16, 10000.0)
    assert torch.equal(
        angle_counts(inv, 300, num_intervals, torch.float32), loop_counts(inv, 300, num_intervals)
    )


def test_distribution_rows_sum_to_one():
    p = angle_distribution(default_inv_freq(128, 10000.0), 4096, 360, torch.float64)
    assert p.shape == (64, 360)
    assert torch.allclose(p.sum(-1), torch.ones(64, dtype=torch.float64))


def test_kl_matches_hand_computation():
    p = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.25, 0.25, 0.5]], dtype=torch.float64)
    assert kl_per_pair(p, q, 4).item() == pytest.approx(math.log(2))
    # an empty extended bin is guarded, an empty pre-training bin contributes nothing
    q_empty = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 1.0) + 0.5 * math.log(0.5 / (EMPTY_BIN_COUNT / 4))
    assert kl_per_pair(p, q_empty, 4).item() == pytest.approx(expected)
    assert kl_per_pair(p, p, 4).item() == 0.0


def test_extrapolation_by_factor_one_is_undisturbed():
    analyzer = DisturbanceAnalyzer(LLAMA2, 360)
    per_pair = analyzer.per_pair(none(128, 10000.0, 4096, 1.0))
    assert torch.equal(per_pair, torch.zeros(64, dtype=torch.float64))


def test_interpolation_keeps_the_lowest_frequencies_and_extrapolation_does_not():
    """The pair with fewer than one rotation over L sees only new angles when extrapolated."""
    analyzer = DisturbanceAnalyzer(LLAMA2, 360)
    d_pi = analyzer.per_pair(pi(128, 10000.0, 4096, 4.0))
    d_none = analyzer.per_pair(none(128, 10000.0, 4096, 4.0))
    assert d_pi[-1] < 1e-4 < 1.0 < d_none[-1]
    assert analyzer.total(d_pi) == pytest.approx(1000 * d_pi.mean().item())


def test_float64_option_is_close_to_float32():
    a32 = DisturbanceAnalyzer(LLAMA2, 360, "float32")
    a64 = DisturbanceAnalyzer(LLAMA2, 360, "float64")
    scaling = pi(128, 10000.0, 4096, 2.0)
    assert a64.original.dtype == torch.float64
    assert a32.total(a32.per_pair(scaling)) == pytest.approx(a64.total(a64.per_pair(scaling)), rel=0.05)


def test_bad_analysis_values():
    with pytest.raises(ConfigError, match="num_intervals"):
        DisturbanceAnalyzer(LLAMA2, 0)
    with pytest.raises(ConfigError, match="angle_dtype"):
        DisturbanceAnalyzer(LLAMA2, 360, "bfloat16")


def test_table_and_logged_disturbance_use_the_documented_settings():
    """The table measures every strategy with the selected strategy's B and dtype (the analysis
    settings override them); the logged disturbance uses the strategy's B and float32 angles."""
    from dprope.model import ModelConfig
    from dprope.rope.registry import default_config
    from dprope.rope.report import AnalysisConfig, run_analysis
    from dprope.rope.selection import DPRoPEConfig
    from dprope.rope.summary import strategy_summary

    model = ModelConfig(name="tiny", tokenizer="byte")
    geometry = model.geometry
    rope = DPRoPEConfig(factor=4.0, num_intervals=90, angle_dtype="float64")
    pi_scaling = default_config("pi", 4.0).compute(geometry)

    def total(num_intervals, dtype, scaling):
        analyzer = DisturbanceAnalyzer(geometry, num_intervals, dtype)
        return analyzer.total(analyzer.per_pair(scaling))

    result = run_analysis(model, rope, AnalysisConfig(figures=False))
    assert (result.num_intervals, result.angle_dtype) == (90, "float64")
    assert result.strategies["pi"].disturbance == total(90, "float64", pi_scaling)
    assert result.strategies["dprope"].config is rope
    overridden = run_analysis(
        model, rope, AnalysisConfig(num_intervals=45, angle_dtype="float32", figures=False)
    )
    assert overridden.strategies["pi"].disturbance == total(45, "float32", pi_scaling)
    from_pi = run_analysis(model, default_config("pi", 4.0), AnalysisConfig(figures=False))
    assert (from_pi.num_intervals, from_pi.angle_dtype) == (360, "float32")
    pi_at_45 = run_analysis(model, default_config("pi", 4.0), AnalysisConfig(num_intervals=45, figures=False))
    dprope_row = pi_at_45.strategies["dprope"].config
    assert (dprope_row.num_intervals, dprope_row.angle_dtype) == (45, "float32")  # the table's settings

    scaling = rope.compute(geometry)
    assert strategy_summary(rope, scaling)["disturbance"] == total(90, "float32", scaling)
    assert strategy_summary(default_config("pi", 4.0), pi_scaling)["disturbance"] == total(
        360, "float32", pi_scaling
    )
