"""Exported configs load in vanilla transformers and reproduce the strategy's frequencies."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

from dprope.config import ConfigError
from dprope.model import ModelConfig, apply_rope
from dprope.rope.registry import STRATEGIES, default_config, rope_config


def rotary_angles(model, length):
    """cos of the angles the model applies at positions 0..length-1, shape (length, head_dim)."""
    rotary = model.model.rotary_emb
    x = torch.zeros(1, length, model.config.hidden_size)
    cos, _ = rotary(x, torch.arange(length)[None])
    return cos[0]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_exported_model_uses_the_strategy_frequencies(name, tiny_model_cfg, tmp_path):
    rope = default_config(name, 4.0)
    hf_config = tiny_model_cfg.hf_config(rope)
    scaling = tiny_model_cfg.scaling(rope)
    assert hf_config.max_position_embeddings == 4 * tiny_model_cfg.original_max_position_embeddings
    torch.manual_seed(0)
    LlamaForCausalLM(hf_config).save_pretrained(tmp_path)

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # vanilla: no custom code, no remote code
    assert loaded.config.rope_parameters["rope_type"] == hf_config.rope_parameters["rope_type"]
    assert torch.equal(loaded.model.rotary_emb.inv_freq, scaling.inv_freq)
    # below and above the pre-training length L = 256
    for length in (100, 256, 700):
        angles = torch.arange(length, dtype=torch.float32)[:, None] * scaling.inv_freq[None]
        expected = torch.cat([angles, angles], -1).cos() * scaling.attention_factor
        assert torch.equal(rotary_angles(loaded, length), expected), f"{name} at length {length}"


def test_dprope_exports_longrope_with_unit_scales(tiny_model_cfg, tmp_path):
    rope = rope_config({"name": "dprope", "factor": 2.0, "num_interpolated_dims": 8})
    hf_config = tiny_model_cfg.hf_config(rope)
    params = hf_config.rope_parameters
    assert params["rope_type"] == "longrope"
    assert params["short_factor"] == params["long_factor"]
    assert sorted(set(params["short_factor"])) == [1.0, 2.0] and params["short_factor"].count(2.0) == 4
    assert params["attention_factor"] == 1.0
    assert params["short_mscale"] == params["long_mscale"] == 1.0
    assert params["original_max_position_embeddings"] == 256
    hf_config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert reloaded.rope_parameters["short_factor"] == params["short_factor"]
    assert reloaded.max_position_embeddings == 512


def test_ntk_exports_default_with_new_base(tiny_model_cfg):
    hf_config = tiny_model_cfg.hf_config(default_config("ntk", 2.0))
    assert hf_config.rope_parameters["rope_type"] == "default"
    assert hf_config.rope_parameters["rope_theta"] == pytest.approx(10000.0 * 2.0 ** (16 / 14))


def test_apply_rope_refuses_a_checkpoint_of_another_geometry(tiny_model_cfg):
    other = ModelConfig(name="other", tokenizer="byte", head_dim=32, hidden_size=128)
    with pytest.raises(ConfigError, match="model.head_dim"):
        apply_rope(other.hf_config(), default_config("pi", 2.0), tiny_model_cfg)
