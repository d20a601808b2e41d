"""A damaged ``model.pretrained`` ends a training run in one line, exit 2, before the process
group, the data or the model: a truncated safetensors file, a missing shard, a file given as
the model directory."""

from __future__ import annotations

import json

import pytest

from dprope.config import ConfigError
from dprope.model import ModelConfig
from dprope.rope.registry import default_config
from dprope.train.config import TrainerConfig
from dprope.train.plan import plan_training
from tests.train.conftest import assert_one_line_error, run_train, small_run


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """The tiny model saved as the trainer exports it (config, safetensors, byte tokenizer)."""
    from dprope.data.tokenizer import byte_tokenizer
    from dprope.train.engine import build_model, model_hf_config

    path = tmp_path_factory.mktemp("export")
    tiny = ModelConfig(name="tiny", tokenizer="byte")
    hf_config, _ = model_hf_config(tiny, default_config("none", 1.0))
    build_model(tiny, hf_config, "fp32", "sdpa", seed=0).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


def damaged_copy(source, target, keep: float = 0.5):
    import shutil

    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: int(weights.stat().st_size * keep)])
    return target


def plan_with(pretrained, tmp_path):
    model = ModelConfig(name="tiny", tokenizer="byte", pretrained=str(pretrained))
    return plan_training(
        model, default_config("dprope", 4.0), TrainerConfig(output_dir=str(tmp_path)), 256, 1
    )


def test_the_plan_refuses_a_damaged_or_misplaced_model(export_dir, tmp_path):
    plan_with(export_dir, tmp_path / "ok")  # the intact export plans
    cut = damaged_copy(export_dir, tmp_path / "cut")
    with pytest.raises(
        ConfigError, match=r"^model\.pretrained: .*model\.safetensors: damaged safetensors file"
    ):
        plan_with(cut, tmp_path / "run")
    sharded = damaged_copy(export_dir, tmp_path / "sharded", keep=1.0)
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(ConfigError, match=r"names 1 shard\(s\) missing .*model-00002-of-00002"):
        plan_with(sharded, tmp_path / "run")
    with pytest.raises(
        ConfigError, match=r"^model\.pretrained: .*config\.json is a file, not a model directory$"
    ):
        plan_with(export_dir / "config.json", tmp_path / "run")


@pytest.mark.slow
def test_a_truncated_export_is_one_line_before_anything_is_written(export_dir, tmp_path, data_cache):
    cut = damaged_copy(export_dir, tmp_path / "cut", keep=0.9)
    out = tmp_path / "run"
    result = run_train([*small_run(out, data_cache), f"model.pretrained={cut}"], timeout=300)
    assert_one_line_error(result, "model.pretrained")
    assert "damaged safetensors file" in result.stderr
    assert not any(out.iterdir())  # Hydra made the run directory; no config.yaml, no checkpoint in it
