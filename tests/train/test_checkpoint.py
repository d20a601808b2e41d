"""Checkpoint bookkeeping: `latest`, completeness, pruning, resume resolution."""

from __future__ import annotations

import pytest

from dprope.config import ConfigError
from dprope.train import checkpoint
from dprope.train.checkpoint import (
    COMPLETE,
    LATEST,
    STATE_FILE,
    latest_checkpoint,
    prune,
    resolve_resume,
    tag_for,
)


def make(root, step, complete=True):
    path = root / tag_for(step)
    path.mkdir(parents=True)
    (path / "mp_rank_00_model_states.pt").write_text("x")
    if complete:
        (path / STATE_FILE).write_text(f'{{"step": {step}, "consumed_samples": 0, "world_size": 1}}')
        (path / COMPLETE).write_text("")
    return path


def test_latest_pointer_is_followed_only_to_a_complete_checkpoint(tmp_path):
    make(tmp_path, 10)
    make(tmp_path, 20, complete=False)  # a save killed half-way
    (tmp_path / LATEST).write_text(tag_for(20))
    assert latest_checkpoint(tmp_path) == tmp_path / tag_for(10)
    (tmp_path / LATEST).write_text(tag_for(10))
    assert latest_checkpoint(tmp_path) == tmp_path / tag_for(10)


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert resolve_resume("auto", tmp_path) is None
    assert resolve_resume("never", tmp_path) is None


def test_resume_from_a_path_must_be_complete(tmp_path):
    root = checkpoint.checkpoint_root(tmp_path)
    good = make(root, 5)
    bad = make(root, 6, complete=False)
    assert resolve_resume(str(good), tmp_path) == good
    with pytest.raises(ConfigError, match="trainer.resume"):
        resolve_resume(str(bad), tmp_path)
    with pytest.raises(ConfigError, match="trainer.resume"):
        resolve_resume(str(tmp_path / "nowhere"), tmp_path)


def test_prune_keeps_the_last_k_complete_and_drops_stale_partials(tmp_path):
    for step in (10, 20, 30, 40):
        make(tmp_path, step)
    make(tmp_path, 25, complete=False)  # stale: older than the newest complete one
    make(tmp_path, 50, complete=False)  # maybe being written right now: kept
    prune(tmp_path, keep_last=2)
    left = sorted(p.name for p in tmp_path.glob("step_*"))
    assert left == [tag_for(30), tag_for(40), tag_for(50)]
