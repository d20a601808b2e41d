"""Faults seen from inside one process: a non-finite gradient norm stops the run with exit code 3
and names the last checkpoint from which training was still finite, and a saved model directory
loads through the ZeRO-3 partitioned path (`HfDeepSpeedConfig`) in training mode."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dprope.data import EMBEDDED
from dprope.model import ModelConfig
from dprope.rope.registry import rope_config
from dprope.tracking import LoggerConfig
from dprope.train.config import EXIT_NON_FINITE, RunConfig, TrainerConfig
from tests.train.conftest import materialised, tiny_plan


def tiny_run(tmp_path, data_cache, **trainer) -> RunConfig:
    return RunConfig(
        model=ModelConfig(name="tiny", tokenizer="byte"),
        rope=rope_config({"name": "dprope", "factor": 4.0}),
        data=dataclasses.replace(EMBEDDED, max_length=256, cache_dir=str(data_cache)),
        trainer=TrainerConfig(
            output_dir=str(tmp_path), steps=2, global_batch_size=2, micro_batch_size=2, **trainer
        ),
        logger=LoggerConfig(),
    )


def test_non_finite_gradient_norm_with_a_finite_loss_stops_with_exit_3(tmp_path, data_cache, capsys):
    from dprope.train.loop import set_up
    from dprope.train.signals import StopRequest

    training = set_up(tiny_run(tmp_path, data_cache, save_every=1), {})
    # the gradient reaching the output layer turns non-finite; the forward pass and loss do not
    training.engine.module.lm_head.register_full_backward_pre_hook(lambda module, grad: (grad[0] * math.inf,))
    stop = StopRequest()
    try:
        result = training.step(stop)
    finally:
        stop.restore()
        training.close()
    assert math.isfinite(result.loss) and not math.isfinite(result.grad_norm)
    assert not result.finite
    assert training.report_non_finite(result) == EXIT_NON_FINITE == 3
    err = capsys.readouterr().err
    assert "error: non-finite gradient norm at step 1" in err
    assert not (tmp_path / "checkpoints").exists()


def test_non_finite_step_names_the_checkpoint_it_started_from_and_the_last_finite_one(
    tmp_path, data_cache, capsys
):
    from tqdm.auto import tqdm

    from dprope.train.loop import set_up
    from dprope.train.signals import StopRequest

    run = tiny_run(tmp_path, data_cache, save_every=1, keep_last=3)
    run.trainer.steps = 4
    training = set_up(run, {})
    stop = StopRequest()
    try:
        for _ in range(3):  # steps 1-3, each saved
            result = training.step(stop)
            training.record(result, tqdm(disable=True))
            training.save_or_stop(result, stop)
        training.engine.module.lm_head.register_full_backward_pre_hook(
            lambda module, grad: (grad[0] * math.inf,)
        )
        result = training.step(stop)
    finally:
        stop.restore()
        training.close()
    assert not result.finite
    assert training.report_non_finite(result) == EXIT_NON_FINITE
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: non-finite gradient norm at step 4 ")
    assert "Checkpoint step_00000003 holds the weights step 4 started from: resuming it fails again." in line
    assert (
        f"The last checkpoint from which training was still finite is {tmp_path / 'checkpoints' / 'step_00000002'}"
        in line
    )


def test_saved_model_directory_loads_partitioned_under_zero3_in_training_mode(dropout_model_dir, tmp_path):
    import deepspeed
    from safetensors.torch import load_file

    model_cfg = ModelConfig(name="tiny", pretrained=str(dropout_model_dir), tokenizer="byte")
    rope = rope_config({"name": "pi", "factor": 2.0})
    trainer = TrainerConfig(output_dir=str(tmp_path), global_batch_size=2, micro_batch_size=2)
    plan = tiny_plan(model_cfg, trainer, rope)
    assert plan.hf_config.attention_dropout == pytest.approx(0.1)
    built = materialised(plan)
    engine, ds_config = built.engine, built.ds_config
    assert ds_config["zero_optimization"]["stage"] == 3
    assert engine.training and engine.module.training  # from_pretrained alone leaves eval mode: no dropout
    saved = load_file(str(dropout_model_dir / "model.safetensors"))
    params = dict(engine.module.named_parameters())
    assert all(hasattr(p, "ds_id") for p in params.values())  # partitioned by ZeRO-3
    with deepspeed.zero.GatheredParameters(list(params.values())):
        for name, tensor in saved.items():
            torch.testing.assert_close(params[name].data, tensor, rtol=0, atol=0, msg=name)
