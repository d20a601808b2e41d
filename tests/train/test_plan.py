"""The training plan: every check and derived number of a run without a model, a process group
or data; the micro-step kind chosen once; a DeepSpeed load failure is not a configuration error."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from dprope.config import ConfigError
from dprope.data import EMBEDDED
from dprope.model import ModelConfig
from dprope.rope.registry import default_config
from dprope.tracking import LoggerConfig
from dprope.train import checkpoint
from dprope.train.config import EXIT_LOAD_FAILED, RunConfig, TrainerConfig
from dprope.train.micro_step import PlainStep, TiledLossStep, UlyssesStep
from dprope.train.plan import plan_run, plan_training

TINY = ModelConfig(name="tiny", tokenizer="byte")


def plan(world_size: int = 1, seq_len: int = 256, **trainer):
    return plan_training(TINY, default_config("dprope", 4.0), TrainerConfig(**trainer), seq_len, world_size)


@pytest.fixture
def no_model(monkeypatch):
    """Building a model, or a process group, fails the test."""
    import deepspeed
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("the plan built something expensive")

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", refuse)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(deepspeed, "init_distributed", refuse)
    monkeypatch.setattr(deepspeed, "initialize", refuse)


def test_the_plan_derives_every_number_without_a_model(no_model):
    eight = plan(
        world_size=8, seq_len=1024, global_batch_size=16, micro_batch_size=1, sequence_parallel_size=4
    )
    assert (eight.world_size, eight.accumulation, eight.tokens_per_step) == (8, 8, 16 * 1024)
    assert eight.layout() == "world 8 x micro 1 x accumulation 8 / sequence parallel 4"
    assert eight.micro_step is UlyssesStep
    assert [type(t).__name__ for t in eight.transforms] == [
        "ActivationCheckpointing",
        "UlyssesAttention",
        "RotaryFrequencies",
    ]
    ds = eight.deepspeed_config()
    assert ds["gradient_accumulation_steps"] == 8 and ds["sequence_parallel_size"] == 4
    one = plan(global_batch_size=4, micro_batch_size=2)
    assert one.layout() == "world 1 x micro 2 x accumulation 2" and one.micro_step is PlainStep
    if not torch.cuda.is_available():
        assert (one.precision, one.dtype, one.implementation, one.kernels) == (
            "fp32",
            torch.float32,
            "sdpa",
            "none",
        )
    assert one.attention == "sdpa (causal over the window)"
    assert one.hf_config.rope_parameters["rope_type"] == "longrope"
    assert one.hf_config.max_position_embeddings == one.scaling.target_length == 1024
    assert torch.equal(one.transforms[-1].inv_freq, one.scaling.inv_freq)
    tiled = plan(tiled_compute=True, attention="anchor")
    assert tiled.micro_step is TiledLossStep and tiled.mode.name == "anchor"
    assert tiled.attention == "anchor: SDPA with an explicit document mask"


@pytest.mark.parametrize(
    "world_size,trainer,field",
    [
        (3, {"global_batch_size": 64, "micro_batch_size": 2}, "trainer.global_batch_size"),
        (2, {"global_batch_size": 8, "sequence_parallel_size": 8}, "trainer.sequence_parallel_size"),
        (1, {"kernels": "liger"}, "trainer.kernels"),
        (
            2,
            {
                "global_batch_size": 8,
                "sequence_parallel_size": 2,
                "attention": "document",
                "attn_implementation": "eager",
            },
            "trainer.attn_implementation",
        ),
        (1, {"attn_implementation": "flash_attention_2"}, "trainer.attn_implementation"),
    ],
)
def test_the_plan_refuses_in_one_line_naming_the_field(no_model, world_size, trainer, field):
    if torch.cuda.is_available():
        pytest.skip("the refusals of a CPU machine")
    with pytest.raises(ConfigError) as err:
        plan(world_size=world_size, **trainer)
    assert err.value.field == field and "\n" not in str(err.value)


def test_a_checkpoint_deepspeed_cannot_load_exits_4_not_2(tmp_path, data_cache, capsys):
    """A checkpoint that passes verification (complete, its manifest intact) but holds no DeepSpeed
    state: the run stops with its own exit code and one line, not as bad configuration."""
    from dprope.train.loop import train

    path = checkpoint.checkpoint_root(tmp_path) / "step_00000001"
    path.mkdir(parents=True)
    (path / checkpoint.STATE_FILE).write_text(json.dumps({"step": 1, "consumed_samples": 2, "world_size": 1}))
    checkpoint.write_manifest(path)
    (path / checkpoint.COMPLETE).write_text("")
    run = RunConfig(
        model=TINY,
        rope=default_config("dprope", 4.0),
        data=dataclasses.replace(EMBEDDED, max_length=256, cache_dir=str(data_cache)),
        trainer=TrainerConfig(output_dir=str(tmp_path), steps=2, global_batch_size=2, micro_batch_size=2),
        logger=LoggerConfig(),
    )
    assert plan_run(run).accumulation == 1
    assert train(run, {}) == EXIT_LOAD_FAILED == 4
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith(f"error: DeepSpeed could not load {path}")
    assert not (tmp_path / "metrics.jsonl").exists()
