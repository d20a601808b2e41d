"""One run per output directory: the lock (a second run is refused in one line naming the holder,
a crashed holder's lock is taken over), starting over with ``trainer.resume=never`` moves the
earlier run aside, and retention deletes only the current run's checkpoints."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dprope.config import ConfigError
from dprope.train import checkpoint
from dprope.train.checkpoint import (
    COMPLETE,
    LATEST,
    STATE_FILE,
    checkpoint_root,
    latest_checkpoint,
    prune,
    tag_for,
)
from dprope.train.run_dir import LOCK, RunLock, holds_run, keep_runs_apart, lock_run_dir, move_aside
from tests.train.conftest import ROOT, read_metrics, run_train, small_run, train_env


def overrides(output_dir: Path, data_cache: Path, *extra: str) -> list[str]:
    return small_run(output_dir, data_cache, "trainer.export=false", *extra)


# --- the lock, in this process --------------------------------------------------------------


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_host(tmp_path):
    first = RunLock(tmp_path)
    assert first.acquire() is None
    record = json.loads((tmp_path / LOCK).read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    with pytest.raises(ConfigError) as err:  # another open file description: flock refuses it
        lock_run_dir(tmp_path, rank=0)
    message = str(err.value)
    assert message.startswith(
        f"trainer.output_dir: {tmp_path} is in use by another run (pid {os.getpid()} on host "
    )
    first.release()
    assert (tmp_path / LOCK).read_text() == ""  # a clean release leaves no holder
    again = lock_run_dir(tmp_path, rank=0)
    assert again is not None and again.stale is None
    again.release()


def test_a_lock_left_by_a_killed_process_is_taken_over_and_logged(tmp_path, caplog):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from dprope.train.run_dir import RunLock; "
            f"assert RunLock({str(tmp_path)!r}).acquire() is None; print('held', flush=True); time.sleep(600)",
        ],
        cwd=ROOT,
        env=train_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"pid {holder.pid} on host"):
            lock_run_dir(tmp_path, rank=0)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with caplog.at_level("WARNING"):
        lock = lock_run_dir(tmp_path, rank=0)  # the kernel dropped the dead holder's lock
    assert lock.stale["pid"] == holder.pid
    assert f"stale lock in {tmp_path}: the run of pid {holder.pid} on host" in caplog.text
    lock.release()


# --- starting over and retention ------------------------------------------------------------


def make(root: Path, step: int, run_id: str) -> Path:
    path = root / tag_for(step)
    path.mkdir(parents=True)
    (path / STATE_FILE).write_text(json.dumps({"step": step, "consumed_samples": 4 * step, "run_id": run_id}))
    (path / COMPLETE).write_text("")
    return path


def test_retention_deletes_only_the_current_runs_checkpoints_and_never_latest(tmp_path):
    """An earlier run's step_4 and step_6 are "newer" by step than the new run's step_2: the new
    one must survive its own save (and `latest` must name an existing directory)."""
    for step in (4, 6):
        make(tmp_path, step, "old")
    make(tmp_path, 1, "new")
    make(tmp_path, 2, "new")
    (tmp_path / LATEST).write_text(tag_for(2))
    prune(tmp_path, keep_last=1, run_id="new")
    assert sorted(p.name for p in tmp_path.glob("step_*")) == [tag_for(2), tag_for(4), tag_for(6)]
    assert latest_checkpoint(tmp_path).name == tag_for(2)


def test_move_aside_moves_only_run_files(tmp_path):
    run = tmp_path / "run"
    make(checkpoint_root(run), 3, "old")
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "notes.txt").write_text("mine")
    (run / LOCK).write_text("")
    assert holds_run(run)
    aside = move_aside(run, "trainer.resume=never")
    assert aside.parent == tmp_path and aside.name.startswith("run.before-")
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoints", "metrics.jsonl"]
    assert sorted(p.name for p in run.iterdir()) == [LOCK, "notes.txt"] and not holds_run(run)


def test_resuming_another_runs_checkpoint_moves_the_directory_s_own_run_aside(tmp_path):
    other = make(checkpoint_root(tmp_path / "other"), 4, "theirs")
    run = tmp_path / "run"
    own = make(checkpoint_root(run), 2, "ours")
    keep_runs_apart(str(own), run, [own], rank=0)  # one of its own: a continuation, nothing moves
    keep_runs_apart("auto", run, [own], rank=0)
    assert not list(tmp_path.glob("run.before-*"))
    keep_runs_apart(str(other), run, [other], rank=0)
    (aside,) = tmp_path.glob("run.before-*")
    assert (checkpoint_root(aside) / tag_for(2)).is_dir() and not holds_run(run)


# --- end to end -----------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_never_over_an_old_run_starts_over_without_mixing_runs(tmp_path, data_cache):
    out = tmp_path / "run"
    old = run_train(
        overrides(out, data_cache, "trainer.steps=6", "trainer.save_every=2", "trainer.keep_last=2")
    )
    assert old.returncode == 0, old.stderr[-3000:]
    old_losses = [r["loss"] for r in read_metrics(out)]
    new = run_train(
        overrides(
            out,
            data_cache,
            "trainer.steps=2",
            "trainer.save_every=2",
            "trainer.keep_last=1",
            "trainer.resume=never",
            "trainer.lr=1e-4",
        )
    )
    assert new.returncode == 0, new.stderr[-3000:]
    # the new run alone: its checkpoint (step_2 survived its own save), metrics and latest
    assert [p.name for p in sorted(checkpoint_root(out).glob("step_*"))] == [tag_for(2)]
    assert latest_checkpoint(checkpoint_root(out)).name == tag_for(2)
    assert [(r["step"], r["lr"]) for r in read_metrics(out)] == [(1, 1e-4), (2, 1e-4)]
    (aside,) = tmp_path.glob("run.before-*")
    assert f"trainer.resume=never: moved the earlier run in {out} aside to {aside}" in new.stdout + new.stderr
    # the earlier run, whole, beside the new one
    assert [p.name for p in sorted(checkpoint_root(aside).glob("step_*"))] == [tag_for(4), tag_for(6)]
    assert [r["loss"] for r in read_metrics(aside)] == old_losses
    # and resuming it continues the new run
    more = run_train(overrides(out, data_cache, "trainer.steps=4", "trainer.save_every=2", "trainer.lr=1e-4"))
    assert more.returncode == 0, more.stderr[-3000:]
    assert "step_00000002 at step 2" in more.stdout + more.stderr
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]


def paused_run(output_dir: Path, data_cache: Path, go: Path, *extra: str) -> subprocess.Popen:
    """A run that stops in the save of step 1 until ``go`` exists (tests/train/pause_in_save.py)."""
    command = [
        sys.executable,
        "-m",
        "tests.train.pause_in_save",
        "1",
        str(go),
        *overrides(output_dir, data_cache, "trainer.steps=2", "trainer.save_every=1", *extra),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    paused = go.with_name(go.name + ".paused")
    deadline = time.monotonic() + 300
    while not paused.exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the run did not reach its save"
        time.sleep(0.1)
    return process


@pytest.mark.slow
def test_two_runs_on_one_directory_give_one_clean_refusal(tmp_path, data_cache):
    out = tmp_path / "run"
    go = tmp_path / "go"
    first = paused_run(out, data_cache, go, "trainer.lr=1e-3")
    try:
        second = run_train(overrides(out, data_cache, "trainer.steps=2", "trainer.lr=5e-4"), timeout=300)
    finally:
        go.write_text("")
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr[-3000:]
    assert lines[0].startswith(
        f"error: trainer.output_dir: {out} is in use by another run (pid {first.pid} on host {socket.gethostname()}"
    )
    # the first run's records only
    assert [(r["step"], r["lr"]) for r in read_metrics(out)] == [(1, 1e-3), (2, 1e-3)]
    assert "lr: 0.001" in (out / "config.yaml").read_text()
    assert (out / LOCK).read_text() == ""  # released on exit


@pytest.mark.slow
def test_a_crashed_runs_lock_is_detected_and_taken_over(tmp_path, data_cache):
    out = tmp_path / "run"
    go = tmp_path / "go"
    first = paused_run(out, data_cache, go)
    first.send_signal(signal.SIGKILL)  # mid-save of step 1, holding the lock
    first.wait()
    assert json.loads((out / LOCK).read_text())["pid"] == first.pid
    again = run_train(overrides(out, data_cache, "trainer.steps=2", "trainer.save_every=1"))
    assert again.returncode == 0, again.stderr[-3000:]
    console = again.stdout + again.stderr
    assert f"stale lock in {out}: the run of pid {first.pid} on host" in console
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
    assert checkpoint.latest_checkpoint(checkpoint_root(out)).name == tag_for(2)
