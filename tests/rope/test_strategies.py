"""Strategies against transformers' own ROPE_INIT_FUNCTIONS, and their defining properties."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from dprope.config import ConfigError
from dprope.model import ModelConfig
from dprope.rope import strategies
from dprope.rope.config import PIConfig, YarnConfig
from dprope.rope.geometry import RotaryGeometry
from dprope.rope.registry import rope_config
from dprope.rope.strategies import default_inv_freq

GEOMETRIES = [(128, 10000.0, 4096), (64, 500000.0, 8192), (16, 10000.0, 256)]
FACTORS = [1.0, 2.0, 4.0, 2.5, 8.0]


def hf_inv_freq(head_dim, rope_theta, original_length, factor, rope_parameters):
    config = LlamaConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        head_dim=head_dim,
        max_position_embeddings=int(original_length * factor),
        rope_parameters={"rope_theta": rope_theta, **rope_parameters},
    )
    rope_type = rope_parameters["rope_type"]
    return ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")


@pytest.mark.parametrize("head_dim,rope_theta,original_length", GEOMETRIES)
@pytest.mark.parametrize("factor", FACTORS)
def test_pi_equals_transformers_linear(head_dim, rope_theta, original_length, factor):
    ours = strategies.pi(head_dim, rope_theta, original_length, factor)
    theirs, attention = hf_inv_freq(
        head_dim, rope_theta, original_length, factor, {"rope_type": "linear", "factor": factor}
    )
    assert ours.inv_freq.dtype == torch.float32
    assert torch.equal(ours.inv_freq, theirs)
    assert ours.attention_factor == attention == 1.0


@pytest.mark.parametrize("head_dim,rope_theta,original_length", GEOMETRIES)
@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("beta_fast,beta_slow", [(32.0, 1.0), (16.0, 2.0)])
def test_yarn_equals_transformers_yarn(head_dim, rope_theta, original_length, factor, beta_fast, beta_slow):
    ours = strategies.yarn(
        head_dim,
        rope_theta,
        original_length,
        factor,
        beta_fast=beta_fast,
        beta_slow=beta_slow,
        attention_factor=None,
        truncate=True,
    )
    params = {
        "rope_type": "yarn",
        "factor": factor,
        "original_max_position_embeddings": original_length,
        "beta_fast": beta_fast,
        "beta_slow": beta_slow,
    }
    theirs, attention = hf_inv_freq(head_dim, rope_theta, original_length, factor, params)
    assert torch.equal(ours.inv_freq, theirs)
    assert ours.attention_factor == pytest.approx(attention, abs=0, rel=1e-12)


@pytest.mark.parametrize("head_dim,rope_theta,original_length", GEOMETRIES)
@pytest.mark.parametrize("factor", FACTORS)
def test_llama3_equals_transformers_llama3(head_dim, rope_theta, original_length, factor):
    ours = strategies.llama3(
        head_dim, rope_theta, original_length, factor, low_freq_factor=1.0, high_freq_factor=4.0
    )
    params = {
        "rope_type": "llama3",
        "factor": factor,
        "original_max_position_embeddings": original_length,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
    }
    theirs, attention = hf_inv_freq(head_dim, rope_theta, original_length, factor, params)
    assert torch.equal(ours.inv_freq, theirs)
    assert ours.attention_factor == attention


def test_default_frequencies_follow_the_definition():
    inv = default_inv_freq(128, 10000.0, torch.float64)
    i = torch.arange(64, dtype=torch.float64)
    assert torch.allclose(inv, 10000.0 ** (-2 * i / 128), rtol=1e-15)


@pytest.mark.parametrize("factor", [2.0, 4.0])
def test_pi_is_default_divided_by_s(factor):
    none = strategies.none(128, 10000.0, 4096, factor)
    pi = strategies.pi(128, 10000.0, 4096, factor)
    assert torch.equal(pi.inv_freq, none.inv_freq / factor)
    assert torch.equal(pi.scaling_factors, torch.full((64,), factor, dtype=torch.float64))
    assert torch.equal(none.scaling_factors, torch.ones(64, dtype=torch.float64))


@pytest.mark.parametrize("factor", [2.0, 4.0, 16.0])
def test_yarn_lies_between_interpolation_and_extrapolation(factor):
    yarn = YarnConfig(factor=factor).compute(RotaryGeometry(128, 10000.0, 4096))
    lam = yarn.scaling_factors
    assert torch.all(lam >= 1 - 1e-6) and torch.all(lam <= factor + 1e-6)
    assert torch.all(lam[1:] >= lam[:-1] * (1 - 1e-6)), "lambda grows as frequency falls"
    assert lam[0] == pytest.approx(1.0, abs=1e-6) and lam[-1] == pytest.approx(factor, rel=1e-6)
    assert yarn.attention_factor == pytest.approx(0.1 * math.log(factor) + 1)


def test_ntk_raises_the_base():
    ntk = strategies.ntk(128, 10000.0, 4096, 4.0)
    new_base = 10000.0 * 4.0 ** (128 / 126)
    assert ntk.details["ntk_rope_theta"] == pytest.approx(new_base)
    assert torch.equal(ntk.inv_freq, default_inv_freq(128, new_base))
    # the highest frequency is untouched, the lowest is divided by exactly s
    assert ntk.scaling_factors[0] == pytest.approx(1.0)
    assert ntk.scaling_factors[-1] == pytest.approx(4.0, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"head_dim": 15}, "model.head_dim"),
        ({"head_dim": 0}, "model.head_dim"),
        ({"original_length": 0}, "model.original_max_position_embeddings"),
        ({"rope_theta": 0.0}, "model.rope_theta"),
    ],
)
def test_bad_geometry_names_the_field(kwargs, field):
    """However the geometry arrives (numbers to a strategy, a geometry, a model preset), the
    one check names the preset's key."""
    args = {"head_dim": 128, "rope_theta": 10000.0, "original_length": 4096, **kwargs}
    preset = {
        "head_dim": args["head_dim"],
        "rope_theta": args["rope_theta"],
        "original_max_position_embeddings": args["original_length"],
    }
    for build in (
        lambda: strategies.pi(**args, factor=2.0),
        lambda: RotaryGeometry(**args),
        lambda: ModelConfig(tokenizer="byte", **preset),
    ):
        with pytest.raises(ConfigError) as err:
            build()
        assert err.value.field == field


def test_bad_factor_names_the_field():
    for build in (
        lambda: PIConfig(factor=0.5),
        lambda: rope_config({"name": "pi", "factor": 0.5}, prefix=""),
    ):
        with pytest.raises(ConfigError) as err:
            build()
        assert err.value.field == "factor"
