"""The DPRoPE selection: threshold and count rules, candidates, and the paper's headline ratios."""

from __future__ import annotations

import pytest
import torch

from dprope.config import ConfigError
from dprope.rope.analysis import DisturbanceAnalyzer
from dprope.rope.geometry import RotaryGeometry
from dprope.rope.registry import build_scaling, default_config, rope_config
from dprope.rope.selection import DPRoPEConfig, select_pairs
from dprope.rope.strategies import pi

LLAMA2 = RotaryGeometry(128, 10000.0, 4096)


def dprope(factor, **params):
    """DPRoPE on LLaMA-2's geometry, through its config (as every run computes it)."""
    return DPRoPEConfig(factor=factor, **params).compute(LLAMA2)


def test_select_pairs_threshold_and_count_rules():
    #                      pair:   0     1     2     3
    d = torch.tensor(
        [
            [0.10, 0.50, 0.20, 0.90],  # none (extrapolation)
            [0.30, 0.10, 0.15, 0.10],
        ],
        dtype=torch.float64,
    )  # pi
    choice, margin = select_pairs(d, extrapolation_index=0)
    assert choice.tolist() == [0, 1, 1, 1]
    assert torch.allclose(margin, torch.tensor([-0.2, 0.4, 0.05, 0.8], dtype=torch.float64))
    assert select_pairs(d, 0, threshold=0.1)[0].tolist() == [0, 1, 0, 1]
    assert select_pairs(d, 0, num_interpolated_dims=2)[0].tolist() == [0, 0, 0, 1]
    assert select_pairs(d, 0, num_interpolated_dims=4)[0].tolist() == [0, 1, 0, 1]
    assert select_pairs(d, 0, num_interpolated_dims=8)[0].tolist() == [1, 1, 1, 1]
    assert select_pairs(d, 0, num_interpolated_dims=0)[0].tolist() == [0, 0, 0, 0]


def test_select_pairs_with_three_candidates_takes_the_best_alternative():
    d = torch.tensor([[0.5, 0.5], [0.2, 0.4], [0.3, 0.1]], dtype=torch.float64)
    assert select_pairs(d, 0)[0].tolist() == [1, 2]


def test_argmin_rule_minimises_every_pair():
    result = dprope(4.0)
    d = result.details["candidate_disturbance"]
    for i, choice in enumerate(result.details["choices"]):
        other = "pi" if choice == "none" else "none"
        assert d[choice][i] <= d[other][i]
    assert set(result.scaling_factors.tolist()) <= {1.0, 4.0}


@pytest.mark.parametrize("factor,k", [(2.0, 80), (4.0, 64)])
def test_count_rule_scales_exactly_k_dimensions(factor, k):
    result = dprope(factor, num_interpolated_dims=k)
    assert result.details["num_interpolated_dims"] == k
    assert int((result.scaling_factors == factor).sum()) == k // 2
    assert torch.equal(
        result.inv_freq, 1.0 / (result.scaling_factors.float() * 10000.0 ** (torch.arange(0, 128, 2) / 128))
    )


def test_count_rule_overrides_threshold():
    a = dprope(2.0, threshold=123.0, num_interpolated_dims=80)
    b = dprope(2.0, num_interpolated_dims=80)
    assert torch.equal(a.scaling_factors, b.scaling_factors)


@pytest.mark.parametrize("factor,min_reduction", [(2.0, 0.6), (4.0, 0.25)])
def test_dprope_disturbs_less_than_pi(factor, min_reduction):
    """The paper reports up to 72% less disturbance than PI at 8k and 32% at 16k (LLaMA-2)."""
    analyzer = DisturbanceAnalyzer(LLAMA2, 360)
    ours = analyzer.total(analyzer.per_pair(dprope(factor)))
    baseline = analyzer.total(analyzer.per_pair(pi(128, 10000.0, 4096, factor)))
    assert ours < (1 - min_reduction) * baseline


def test_more_candidates_never_disturb_more():
    analyzer = DisturbanceAnalyzer(LLAMA2, 360)
    two = dprope(4.0)
    more = dprope(4.0, candidates=["none", "pi", "ntk", "yarn"])
    assert set(more.details["choices"]) <= {"none", "pi", "ntk", "yarn"}
    assert analyzer.total(analyzer.per_pair(more)) <= analyzer.total(analyzer.per_pair(two)) + 1e-9


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"num_intervals": 0}, "rope.num_intervals"),
        ({"num_interpolated_dims": 7}, "rope.num_interpolated_dims"),
        ({"num_interpolated_dims": -2}, "rope.num_interpolated_dims"),
        ({"factor": 0.5}, "rope.factor"),
        ({"candidates": ["pi", "yarn"]}, "rope.candidates"),
        ({"candidates": ["none", "dprope"]}, "rope.candidates"),
        ({"angle_dtype": "half"}, "rope.angle_dtype"),
        ({"name": "clex"}, "rope.name"),
        ({"bogus": 1}, "rope.bogus"),
    ],
)
def test_bad_selection_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        rope_config({"name": "dprope", **overrides})
    assert err.value.field == field


def test_k_above_head_dim_is_refused_for_the_model():
    cfg = rope_config({"name": "dprope", "factor": 2.0, "num_interpolated_dims": 130})
    with pytest.raises(ConfigError) as err:
        build_scaling(cfg, 128, 10000.0, 4096)
    assert err.value.field == "rope.num_interpolated_dims"


def test_keys_of_another_strategy_are_refused():
    with pytest.raises(ConfigError, match="rope.num_intervals"):
        rope_config({"name": "pi", "factor": 2.0, "num_intervals": 360})
    assert isinstance(default_config("dprope", 2.0), DPRoPEConfig)
