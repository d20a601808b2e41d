"""The phases of `train` one by one, on the real DeepSpeed engine and the tiny model."""

from __future__ import annotations

import json
import math
import signal

from omegaconf import OmegaConf
from tqdm.auto import tqdm

from dprope.cli import compose_config
from dprope.train import checkpoint
from dprope.train.config import EXIT_PREEMPTED, RunConfig
from dprope.train.loop import set_up
from dprope.train.signals import StopRequest
from dprope.train.stepper import StepResult
from tests.train.conftest import small_run


def test_each_phase_alone(tmp_path, data_cache):
    cfg = compose_config(
        "train",
        small_run(tmp_path, data_cache, "trainer.steps=3", "trainer.save_every=2", "trainer.peak_tflops=1"),
    )
    training = set_up(RunConfig.from_config(cfg), OmegaConf.to_container(cfg, resolve=True))
    assert training.state.step == 0 and training.state.last_saved == -1 and training.plan.accumulation == 2
    assert training.plan.tokens_per_step == 4 * 256

    stop = StopRequest(signals=(signal.SIGUSR2,))
    try:
        result = training.step(stop)
        assert math.isfinite(result.loss) and result.grad_norm > 0 and not result.stop_requested
        progress = tqdm(disable=True)
        record = training.record(result, progress)
        assert (
            record["step"] == training.state.step == 1 and training.state.trainer_state.consumed_samples == 4
        )
        # MFU: tokens/s x FLOPs per token over the configured 1 TFLOP/s peak
        assert math.isclose(
            record["mfu"], 4 * 256 / result.elapsed * training.recorder.flops_per_token / 1e12
        )
        assert (
            training.save_or_stop(result, stop) is None and training.state.last_saved == -1
        )  # step 1: no save

        result = training.step(stop)
        training.record(result, progress)
        assert training.save_or_stop(result, stop) is None and training.state.last_saved == 2  # save_every=2
        assert checkpoint.latest_checkpoint(tmp_path / "checkpoints").name == "step_00000002"

        signal.raise_signal(signal.SIGUSR2)  # a stop request during step 3
        result = training.step(stop)
        assert result.stop_requested
        training.record(result, progress)
        assert training.save_or_stop(result, stop) == EXIT_PREEMPTED and training.state.last_saved == 3

        stopped = StepResult(loss=1.0, grad_norm=1.0, stop_requested=False, elapsed=1.0)
        assert stopped.finite and not StepResult(1.0, float("nan"), False, 1.0).finite
        training.finish()  # step 3 is saved already: only the export
        exported = json.loads((tmp_path / "hf" / "config.json").read_text())
        assert exported["rope_parameters"]["rope_type"] == "longrope"
    finally:
        stop.restore()
        training.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
