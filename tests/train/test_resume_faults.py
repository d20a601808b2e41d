"""Resumes that meet a fault, end to end on CPU, from a model with attention dropout (so the RNG
state must be restored for the losses to match): a truncated file in the newest checkpoint, a
kill in the middle of a save; and a streaming run resumed at its exact position."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dprope.train.checkpoint import COMPLETE, LATEST, checkpoint_root, latest_checkpoint
from tests.train.conftest import ROOT, pretrained, read_metrics, run_train, small_run, train_env

pytestmark = pytest.mark.slow

STEPS = 8
SAVE_EVERY = 4


def losses(output_dir: Path) -> list[float]:
    return [record["loss"] for record in read_metrics(output_dir)]


def dropout_overrides(output_dir: Path, data_cache: Path, model_dir: Path) -> list[str]:
    return [
        *small_run(output_dir, data_cache, f"trainer.steps={STEPS}", f"trainer.save_every={SAVE_EVERY}"),
        *pretrained(model_dir),
        "trainer.export=false",
    ]


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory, data_cache, dropout_model_dir) -> Path:
    """An uninterrupted run from a saved model directory with attention dropout 0.1."""
    out = tmp_path_factory.mktemp("dropout")
    result = run_train(dropout_overrides(out, data_cache, dropout_model_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in sorted(checkpoint_root(out).glob("step_*"))] == ["step_00000004", "step_00000008"]
    return out


def copy_checkpoints(source: Path, target: Path, *steps: int) -> Path:
    root = checkpoint_root(target)
    root.mkdir(parents=True)
    for step in steps:
        shutil.copytree(checkpoint_root(source) / f"step_{step:08d}", root / f"step_{step:08d}")
    (root / LATEST).write_text(f"step_{steps[-1]:08d}")
    return root


def test_truncated_file_in_the_newest_checkpoint_falls_back_to_the_previous(
    dropout_run, tmp_path, data_cache, dropout_model_dir
):
    root = copy_checkpoints(dropout_run, tmp_path, 4, 8)
    damaged = root / "step_00000008" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    with open(damaged, "r+b") as handle:  # a full disk: the tail of the optimizer state is lost
        handle.truncate(damaged.stat().st_size // 2)
    result = run_train(dropout_overrides(tmp_path, data_cache, dropout_model_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert "checkpoint" in console and f"{damaged}:" in console and "trying the previous one" in console
    assert "resumed from" in console and "step_00000004 at step 4" in console
    # the uninterrupted run's losses from step 5 on: weights, optimizer, data position and the
    # dropout masks (the RNG state) all continue from step 4
    assert [r["step"] for r in read_metrics(tmp_path)] == [5, 6, 7, 8]
    assert losses(tmp_path) == losses(dropout_run)[4:]


def test_kill_during_a_save_leaves_the_previous_checkpoint_in_charge(
    dropout_run, tmp_path, data_cache, dropout_model_dir
):
    copy_checkpoints(dropout_run, tmp_path, 4)
    overrides = dropout_overrides(tmp_path, data_cache, dropout_model_dir)
    # the trainer's save hook kills the run in the save of the last step (tests/train/kill_in_save.py)
    command = [sys.executable, "-m", "tests.train.kill_in_save", str(STEPS), *overrides]
    killed = subprocess.run(command, cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]  # killed between the DeepSpeed files and COMPLETE
    half = checkpoint_root(tmp_path) / f"step_{STEPS:08d}"
    assert list(half.glob("*_optim_states.pt")) and not (half / COMPLETE).exists()
    assert latest_checkpoint(checkpoint_root(tmp_path)).name == "step_00000004"
    resumed = run_train(overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step_00000004 at step 4" in resumed.stdout + resumed.stderr
    assert losses(tmp_path) == losses(dropout_run)[4:]
    assert latest_checkpoint(checkpoint_root(tmp_path)).name == f"step_{STEPS:08d}"


def test_streaming_run_resumes_at_its_exact_position(tmp_path, data_cache):
    def overrides(out: Path, *extra: str) -> list[str]:
        return small_run(
            out,
            data_cache,
            "data.streaming=true",
            f"trainer.steps={STEPS}",
            f"trainer.save_every={SAVE_EVERY}",
            "trainer.export=false",
            *extra,
        )

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    result = run_train(overrides(whole))
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_train(overrides(resumed, f"trainer.resume={checkpoint_root(whole) / 'step_00000004'}"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in read_metrics(resumed)] == [5, 6, 7, 8]
    assert losses(resumed) == losses(whole)[4:]
