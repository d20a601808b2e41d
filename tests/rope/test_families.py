"""Model families and pre-training RoPE: the geometry read from a checkpoint's config and checked
against the preset, the effective frequencies of an already-scaled RoPE (Llama-3.1's llama3) as
every strategy's reference, and exports that give exactly the intended frequencies in vanilla
transformers after a save/load round trip, for each family and strategy."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from dprope.config import ConfigError
from dprope.model import FAMILIES, ModelConfig, checkpoint_geometry
from dprope.rope import strategies
from dprope.rope.analysis import DisturbanceAnalyzer
from dprope.rope.geometry import RotaryGeometry
from dprope.rope.registry import STRATEGIES, default_config
from dprope.rope.report import AnalysisConfig, format_table, run_analysis
from tests.families import FAMILY_PRESETS, PUBLISHED, preset_model, tiny_model, tiny_model_overrides

LLAMA31 = RotaryGeometry(
    128,
    500000.0,
    131072,
    rope_type="llama3",
    rope_scaling={
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
)
# Qwen2.5-7B-Instruct with the YaRN x4 of its model card written into its config
QWEN_YARN = RotaryGeometry(
    128,
    1e6,
    131072,
    rope_type="yarn",
    rope_scaling={"factor": 4.0, "original_max_position_embeddings": 32768},
)


def saved_config(tmp_path, config: dict):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return AutoConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("preset", FAMILY_PRESETS)
def test_preset_agrees_with_its_published_config(preset, tmp_path):
    """transformers reads the published config.json (legacy rope_scaling included); the preset's
    family, rotary numbers and architecture agree with it."""
    hf_config = saved_config(tmp_path, PUBLISHED[preset])
    model = preset_model(preset)
    geometry = model.checked_geometry(hf_config, str(tmp_path))
    assert geometry == model.geometry
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
        assert getattr(model, key) == getattr(hf_config, key), key
    assert (model.intermediate_size, model.vocab_size) == (hf_config.intermediate_size, hf_config.vocab_size)
    assert model.tie_word_embeddings is hf_config.tie_word_embeddings is False
    # random init of the preset builds the same rotary geometry
    assert checkpoint_geometry(model.hf_config()) == checkpoint_geometry(hf_config)


def test_qwen2_5_states_its_trained_length_beside_its_config_limit(tmp_path):
    hf_config = saved_config(tmp_path, PUBLISHED["qwen2_5_7b"])
    model = preset_model("qwen2_5_7b")
    assert hf_config.max_position_embeddings == model.max_position_embeddings == 131072
    assert model.checked_geometry(hf_config).original_length == 32768
    # a yarn x4 from 32768 on it is the official recipe: 131072 positions
    assert model.scaling(default_config("yarn", 4.0)).target_length == 131072
    with pytest.raises(ConfigError) as err:  # the config's limit is part of what the preset states
        preset_model("qwen2_5_7b", ["model.max_position_embeddings=65536"]).checked_geometry(hf_config)
    assert err.value.field == "model.max_position_embeddings"


@pytest.mark.parametrize("geometry", [LLAMA31, QWEN_YARN], ids=["llama3", "yarn"])
def test_effective_frequencies_are_transformers_own(geometry):
    params = geometry.native_parameters()
    config = LlamaConfig(
        hidden_size=4 * 128,
        num_attention_heads=4,
        head_dim=128,
        max_position_embeddings=geometry.original_length,
        rope_parameters=params,
    )
    theirs, attention = ROPE_INIT_FUNCTIONS[params["rope_type"]](config, "cpu")
    assert torch.equal(geometry.inv_freq(), theirs)
    assert geometry.attention_factor == pytest.approx(attention, rel=1e-12)
    exact = geometry.inv_freq(torch.float64)
    torch.testing.assert_close(exact, theirs.double(), rtol=1e-6, atol=0)
    assert not torch.allclose(exact, geometry.default_inv_freq(torch.float64))  # really scaled


GEOMETRIES = [(128, 10000.0, 4096), (128, 500000.0, 8192), (128, 1e6, 32768), (16, 10000.0, 256)]


@pytest.mark.parametrize("head_dim,base,length", GEOMETRIES)
@pytest.mark.parametrize("factor", [2.0, 4.0, 16.0])
def test_rules_on_a_reference_equal_the_native_formulas_on_plain_rope(head_dim, base, length, factor):
    """The rules a scaled pre-training RoPE is extended with, given plain frequencies, are the
    native strategies (computed independently: closed form vs. the reference's rotations)."""
    reference = strategies.default_inv_freq(head_dim, base, torch.float64)
    pairs = head_dim // 2
    assert torch.equal(
        strategies.pi_divisors(pairs, factor), strategies.pi(head_dim, base, length, factor).scaling_factors
    )
    native_ntk = strategies.ntk(head_dim, base, length, factor).scaling_factors
    torch.testing.assert_close(strategies.ntk_divisors(head_dim, factor), native_ntk, rtol=1e-6, atol=0)
    for truncate in (True, False):
        for beta_fast, beta_slow in ((32.0, 1.0), (16.0, 2.0)):
            native = strategies.yarn(
                head_dim, base, length, factor,
                beta_fast=beta_fast, beta_slow=beta_slow, attention_factor=None, truncate=truncate,
            )  # fmt: skip
            ours, correction = strategies.yarn_divisors(
                reference,
                head_dim,
                length,
                factor,
                beta_fast=beta_fast,
                beta_slow=beta_slow,
                truncate=truncate,
            )
            assert correction == pytest.approx(native.details["correction_range"], abs=1e-9)
            torch.testing.assert_close(ours, native.scaling_factors, rtol=1e-6, atol=0)
    native = strategies.llama3(head_dim, base, length, factor, low_freq_factor=1.0, high_freq_factor=4.0)
    ours = strategies.llama3_divisors(reference, length, factor, 1.0, 4.0)
    torch.testing.assert_close(ours, native.scaling_factors, rtol=1e-6, atol=0)


def test_the_reference_distribution_is_the_effective_one():
    """Disturbance is measured against the model's own (llama3-scaled) frequencies over its L:
    extending by s = 1 disturbs nothing; the unscaled frequencies would be a disturbance."""
    analyzer = DisturbanceAnalyzer(LLAMA31)
    assert torch.equal(analyzer.original_inv_freq, LLAMA31.inv_freq())
    unchanged = default_config("none", 1.0).compute(LLAMA31)
    assert analyzer.total(analyzer.per_pair(unchanged)) == 0.0
    default_only = RotaryGeometry(128, 500000.0, 131072)
    stripped = strategies.scaling_result("none", LLAMA31, 1.0, default_only.inv_freq())
    assert analyzer.total(analyzer.per_pair(stripped)) > 1.0


def test_pi_of_llama3_1_divides_its_effective_frequencies():
    """ "PI x4 of Llama-3.1": each llama3-scaled frequency divided by 4, from 131072 to 524288."""
    pi = default_config("pi", 4.0).compute(LLAMA31)
    assert pi.target_length == 4 * 131072
    assert torch.equal(pi.scaling_factors, torch.full((64,), 4.0, dtype=torch.float64))
    torch.testing.assert_close(pi.inv_freq, LLAMA31.inv_freq() / 4, rtol=1e-6, atol=0)
    params = default_config("pi", 4.0).export(pi)
    assert params["rope_type"] == "longrope" and params["original_max_position_embeddings"] == 131072
    # the high frequencies (llama3 left them alone) are divided by 4, the low ones by 8 x 4
    assert params["short_factor"][0] == 4.0 and params["short_factor"][-1] == pytest.approx(32.0)


def test_dprope_on_llama3_1_chooses_per_pair_against_the_effective_reference():
    dprope = default_config("dprope", 2.0).compute(LLAMA31)
    choices = dprope.details["choices"]
    assert set(choices) == {"none", "pi"}
    lam = dprope.scaling_factors
    assert torch.equal(lam, torch.where(torch.tensor([c == "pi" for c in choices]), 2.0, 1.0).double())
    analyzer = DisturbanceAnalyzer(LLAMA31)
    for name in ("none", "pi"):
        candidate = default_config(name, 2.0).compute(LLAMA31)
        assert dprope.details["candidate_disturbance"][name] == analyzer.per_pair(candidate).tolist()


def rotary(model):
    return model.model.rotary_emb


# a Qwen2.5 instruct config with its model card's YaRN x4 written in (an own RoPE with a cos/sin scale)
YARN_QWEN = (
    "qwen2_5_7b",
    "model.rope_type=yarn",
    "+model.rope_scaling.factor=4.0",
    "+model.rope_scaling.original_max_position_embeddings=64",
)


@pytest.mark.parametrize("preset", [*FAMILY_PRESETS, YARN_QWEN], ids=[*FAMILY_PRESETS, "qwen2_5_7b-yarn"])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_export_round_trip_gives_the_intended_frequencies(preset, name, tmp_path):
    """A tiny model of the family (its own rope type kept) with the strategy applied, saved and
    loaded by vanilla transformers: inv_freq and the cos/sin scale are the strategy's, which are
    the model's own frequencies divided by lambda_i."""
    if isinstance(preset, tuple):
        base, *extra = preset
        model_cfg = preset_model(base, [*tiny_model_overrides(base), *extra])
        assert model_cfg.geometry.attention_factor > 1
    else:
        model_cfg = tiny_model(preset)
    rope = default_config(name, 4.0)
    hf_config = model_cfg.hf_config(rope)
    scaling = model_cfg.scaling(rope)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(hf_config).save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # vanilla: no custom code
    assert loaded.config.model_type == model_cfg.family
    assert loaded.config.max_position_embeddings == 4 * 256
    assert torch.equal(rotary(loaded).inv_freq, scaling.inv_freq)
    geometry = model_cfg.geometry
    assert rotary(loaded).attention_scaling == pytest.approx(
        geometry.attention_factor * scaling.attention_factor
    )
    intended = geometry.inv_freq(torch.float64) / scaling.scaling_factors
    torch.testing.assert_close(scaling.inv_freq.double(), intended, rtol=1e-6, atol=0)
    # past L the model still uses them (longrope switches frequency sets by length: both are equal)
    x = torch.zeros(1, 700, hf_config.hidden_size)
    cos, _ = rotary(loaded)(x, torch.arange(700)[None])
    angles = torch.arange(700, dtype=torch.float32)[:, None] * scaling.inv_freq[None]
    expected = torch.cat([angles, angles], -1).cos() * rotary(loaded).attention_scaling
    assert torch.equal(cos[0], expected)
    if geometry.is_plain or name == "none":
        assert loaded.config.rope_parameters["rope_type"] != "longrope" or name == "dprope"
    else:
        assert loaded.config.rope_parameters["rope_type"] == "longrope"


@pytest.mark.parametrize(
    "preset",
    # Llama-3.1 at s=2 measures 262144 positions per pair: the slow tier
    [pytest.param(p, marks=pytest.mark.slow if p == "llama3_1_8b" else ()) for p in FAMILY_PRESETS],
)
def test_each_preset_prints_its_disturbance_table(preset):
    model = preset_model(preset)
    factor = 2.0
    result = run_analysis(model, default_config("dprope", factor), AnalysisConfig(figures=False))
    table = format_table(result)
    assert table.startswith(f"Rotary-angle disturbance: {model.name} (")
    assert set(result.strategies) == set(STRATEGIES)
    assert result.target_length == 2 * model.original_max_position_embeddings
    assert result.strategies["dprope"].disturbance <= result.strategies["pi"].disturbance
    if model.rope_type == "llama3":
        assert "pre-training rope llama3" in table


# ---- bad input: one line naming the model and what is supported ----------------------------


def test_a_checkpoint_without_rotary_embedding_is_named(tmp_path):
    from transformers import GPT2Config

    with pytest.raises(ConfigError) as err:
        checkpoint_geometry(GPT2Config(), "some/gpt2")
    assert err.value.field == "model.pretrained"
    assert str(err.value) == (
        "model.pretrained: some/gpt2 (gpt2) has no rotary position embedding; "
        f"supported families: {', '.join(FAMILIES)}"
    )


def test_an_unsupported_family_is_named():
    from transformers import GPTNeoXConfig

    with pytest.raises(
        ConfigError,
        match=r"^model.pretrained: x \(gpt_neox\) is not a supported family \(supported: llama, mistral, qwen2\)$",
    ):
        checkpoint_geometry(GPTNeoXConfig(), "x")


@pytest.mark.parametrize(
    "rope_parameters,rope_type",
    [
        ({"rope_type": "dynamic", "factor": 2.0}, "dynamic"),
        ({"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8, "original_max_position_embeddings": 128}, "longrope"),
    ],
)  # fmt: skip
def test_a_rope_type_that_does_not_compose_is_named(rope_parameters, rope_type):
    config = ModelConfig(tokenizer="byte").hf_config()
    config.rope_parameters = {"rope_theta": 10000.0, **rope_parameters}
    with pytest.raises(ConfigError) as err:
        checkpoint_geometry(config, "ckpt")
    assert err.value.field == "model.pretrained"
    assert f"uses rope type {rope_type!r}, which the strategies cannot compose with" in str(err.value)
    assert "(supported: default, linear, llama3, yarn)" in str(err.value)


@pytest.mark.parametrize(
    "override,field",
    [
        ("model.head_dim=32", "model.head_dim"),
        ("model.rope_theta=10000", "model.rope_theta"),
        (None, "model.rope_type"),  # a plain-RoPE checkpoint (Llama-3-8B's) for the llama3 preset
        ("model.rope_scaling.factor=4.0", "model.rope_scaling"),
        ("model.original_max_position_embeddings=65536", "model.original_max_position_embeddings"),
        ("model.family=mistral", "model.family"),
    ],
)
def test_a_preset_that_disagrees_with_the_checkpoint_names_the_field(override, field, tmp_path):
    hf_config = saved_config(tmp_path, PUBLISHED["llama3_1_8b" if override else "llama3_8b"])
    with pytest.raises(ConfigError) as err:
        preset_model("llama3_1_8b", [override] if override else []).checked_geometry(hf_config, str(tmp_path))
    assert err.value.field == field
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"family": "gpt2"}, "family"),
        ({"rope_type": "dynamic"}, "model.rope_type"),
        ({"rope_type": "llama3", "rope_scaling": {"factor": 8.0}}, "model.rope_scaling"),
        ({"rope_type": "linear", "rope_scaling": {"factor": 2.0, "mscale": 1.0}}, "model.rope_scaling"),
        ({"partial_rotary_factor": 0.1}, "model.partial_rotary_factor"),
        ({"max_position_embeddings": 128}, "max_position_embeddings"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ],
)
def test_bad_family_and_rope_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        ModelConfig(tokenizer="byte", **kwargs)
    assert err.value.field == field


def test_partial_rotary_factor_rotates_a_share_of_the_head():
    geometry = RotaryGeometry(64, 10000.0, 256, partial_rotary_factor=0.5)
    assert (geometry.rotary_dim, geometry.num_pairs) == (32, 16)
    assert torch.equal(geometry.inv_freq(), strategies.default_inv_freq(32, 10000.0))
    yarn = default_config("yarn", 4.0)
    params = yarn.export(yarn.compute(geometry))
    assert params["partial_rotary_factor"] == 0.5
    with pytest.raises(ConfigError, match="rope.num_interpolated_dims"):
        from dprope.rope.registry import compute_scaling, rope_config

        compute_scaling(rope_config({"name": "dprope", "num_interpolated_dims": 34}), geometry)
    assert math.isclose(geometry.attention_factor, 1.0)
