"""Training-free evaluation: a strategy applied to a base checkpoint at load time is the model the
trainer would export for it, and the model whose rotary frequencies are the strategy's."""

from __future__ import annotations

import json

import pytest
import torch

from dprope.config import ConfigError
from dprope.eval.loading import load_with_strategy, resolve_checkpoint
from dprope.model import ModelConfig
from dprope.rope.registry import default_config, rope_config
from tests.eval.conftest import TINY_MAX_POSITIONS
from tests.eval.test_cli import run_cli

STRATEGIES = [("pi", 4.0), ("yarn", 4.0), ("ntk", 2.0), ("dprope", 2.0), ("llama3", 4.0)]


def _base_model_cfg(path) -> ModelConfig:
    return ModelConfig(
        name="tiny",
        pretrained=str(path),
        tokenizer="byte",
        original_max_position_embeddings=TINY_MAX_POSITIONS,
    )


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def input_ids() -> torch.Tensor:
    # beyond L: the long-context branch of longrope and the scaled positions both matter
    return torch.randint(4, 260, (1, TINY_MAX_POSITIONS + 100), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("name", "factor"), STRATEGIES)
def test_training_free_load_equals_trainer_export_and_strategy_frequencies(
    tiny_model_dir, input_ids, name, factor
):
    from transformers import AutoModelForCausalLM

    from dprope.train.engine import build_model, model_hf_config

    model_cfg = _base_model_cfg(tiny_model_dir)
    rope = default_config(name, factor)
    loaded, checkpoint = load_with_strategy(model_cfg, rope, "cpu")
    ours = _logits(loaded, input_ids)

    # the trainer's path: the same config change, then the weights
    hf_config, scaling = model_hf_config(model_cfg, rope)
    trainer = build_model(model_cfg, hf_config, "fp32", "sdpa", seed=0).eval()
    assert torch.equal(ours, _logits(trainer, input_ids))
    assert loaded.config.rope_parameters == hf_config.rope_parameters

    # independent: the base model with the strategy's float32 inv_freq and cos/sin factor put in by hand
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    base_logits = _logits(base, input_ids)
    for module in base.modules():
        if isinstance(getattr(module, "inv_freq", None), torch.Tensor):
            module.inv_freq = scaling.inv_freq.clone()
            module.attention_scaling = scaling.attention_factor
    torch.testing.assert_close(ours, _logits(base, input_ids), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours, base_logits, atol=1e-3)  # the strategy changed the model

    assert checkpoint.max_positions == scaling.target_length
    assert checkpoint.name == f"tiny-{name}-x{factor:g}"
    assert checkpoint.strategy["strategy"] == name and checkpoint.strategy["factor"] == factor


def test_training_free_refuses_a_scaled_checkpoint_and_a_wrong_length(tiny_model_dir, tmp_path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.rope_parameters = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
    config.save_pretrained(tmp_path)
    for file in tiny_model_dir.glob("*.safetensors"):
        (tmp_path / file.name).write_bytes(file.read_bytes())
    with pytest.raises(
        ConfigError, match="model.rope_type: default does not match the checkpoint's .* linear"
    ):
        resolve_checkpoint(_base_model_cfg(tmp_path), default_config("yarn", 2.0))
    wrong = ModelConfig(name="tiny", pretrained=str(tiny_model_dir), tokenizer="byte")  # L = 256
    with pytest.raises(ConfigError) as err:
        resolve_checkpoint(wrong, default_config("pi", 2.0))
    assert err.value.field == "model.original_max_position_embeddings"


def test_factor_below_one_is_refused():
    with pytest.raises(ConfigError) as err:
        rope_config({"name": "yarn", "factor": 0.5})
    assert err.value.field == "rope.factor"


@pytest.mark.slow
def test_cli_training_free_perplexity_names_strategy_and_factor(tiny_model_dir, text_documents, tmp_path):
    proc = run_cli(
        tmp_path / "hydra",
        "model=tiny",
        f"model.pretrained={tiny_model_dir}",
        f"model.original_max_position_embeddings={TINY_MAX_POSITIONS}",
        "rope=yarn",
        "rope.factor=2",
        "eval=perplexity",
        "eval.perplexity.lengths=[128]",
        "eval.perplexity.stride=64",
        "data=local",
        f"data.paths.test=[{text_documents[0]}]",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"eval.output_dir={tmp_path / 'out'}",
        "eval.plots=false",
        "eval.progress=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = json.loads((tmp_path / "out" / "results.json").read_text())["model"]
    assert model["name"] == "tiny-yarn-x2" and model["max_position_embeddings"] == 2 * TINY_MAX_POSITIONS
    assert model["strategy"]["strategy"] == "yarn" and model["strategy"]["factor"] == 2.0
    assert model["rope_parameters"]["rope_type"] == "yarn"


def test_cli_factor_below_one_is_one_line(tiny_model_dir, tmp_path):
    proc = run_cli(
        tmp_path / "hydra", "model=tiny", f"model.pretrained={tiny_model_dir}", "rope=yarn", "rope.factor=0.5"
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: rope.factor: must be >= 1 (got 0.5)"], proc.stderr[-2000:]
