"""Checkpoint bookkeeping: `latest`, completeness, pruning, resume resolution, the manifest and
the fallback from a damaged checkpoint."""

from __future__ import annotations

import json

import pytest

from dprope.config import ConfigError
from dprope.train import checkpoint
from dprope.train.checkpoint import (
    COMPLETE,
    LATEST,
    MANIFEST,
    STATE_FILE,
    latest_checkpoint,
    prune,
    resume_candidates,
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
    assert resume_candidates("auto", tmp_path) == []
    assert resume_candidates("never", tmp_path) == []


def test_resume_from_a_path_must_be_complete(tmp_path):
    root = checkpoint.checkpoint_root(tmp_path)
    good = make(root, 5)
    bad = make(root, 6, complete=False)
    assert resume_candidates(str(good), tmp_path) == [good]
    assert resume_candidates("never", tmp_path) == []  # a complete checkpoint, not resumed from
    with pytest.raises(ConfigError, match="trainer.resume"):
        resume_candidates(str(bad), tmp_path)
    with pytest.raises(ConfigError, match="trainer.resume"):
        resume_candidates(str(tmp_path / "nowhere"), tmp_path)


def test_prune_keeps_the_last_k_complete_and_drops_stale_partials(tmp_path):
    for step in (10, 20, 30, 40):
        make(tmp_path, step)
    make(tmp_path, 25, complete=False)  # stale: older than the newest complete one
    make(tmp_path, 50, complete=False)  # maybe being written right now: kept
    prune(tmp_path, keep_last=2)
    left = sorted(p.name for p in tmp_path.glob("step_*"))
    assert left == [tag_for(30), tag_for(40), tag_for(50)]


def saved(root, step, files: dict[str, bytes]):
    """A complete checkpoint with a manifest, as `checkpoint.save` leaves it (one process)."""
    path = make(root, step)
    for name, data in files.items():
        (path / name).write_bytes(data)
    checkpoint.write_manifest(path)
    return path


def test_manifest_lists_every_file_with_size_and_crc32(tmp_path):
    import zlib

    path = saved(tmp_path, 1, {"zero_pp_rank_0_optim.pt": b"abc" * 1000, "rng_rank0.pt": b"r"})
    files = json.loads((path / MANIFEST).read_text())["files"]
    assert set(files) == {"zero_pp_rank_0_optim.pt", "rng_rank0.pt", "mp_rank_00_model_states.pt", STATE_FILE}
    assert files["zero_pp_rank_0_optim.pt"] == {"size": 3000, "crc32": f"{zlib.crc32(b'abc' * 1000):08x}"}
    assert checkpoint.verify(path) == []


@pytest.mark.parametrize(
    "damage,what",
    [
        (lambda f: f.write_bytes(f.read_bytes()[:-1]), "2999 bytes, the manifest says 3000"),
        (lambda f: f.write_bytes(b"abd" + f.read_bytes()[3:]), "checksum differs"),
        (lambda f: f.unlink(), "missing"),
    ],
)
def test_verify_names_the_damaged_file(tmp_path, damage, what):
    path = saved(tmp_path, 1, {"zero_pp_rank_0_optim.pt": b"abc" * 1000})
    damage(path / "zero_pp_rank_0_optim.pt")
    (problem,) = checkpoint.verify(path)
    assert problem.startswith(str(path / "zero_pp_rank_0_optim.pt")) and what in problem


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    root = checkpoint.checkpoint_root(tmp_path)
    older = saved(root, 4, {"zero_pp_rank_0_optim.pt": b"x" * 100})
    newest = saved(root, 8, {"zero_pp_rank_0_optim.pt": b"y" * 100})
    (root / LATEST).write_text(newest.name)
    candidates = checkpoint.resume_candidates("auto", tmp_path)
    assert candidates == [newest, older]
    assert checkpoint.choose_resume(candidates, world_size=1, rank=0).path == newest
    (newest / "zero_pp_rank_0_optim.pt").write_bytes(b"y" * 50)  # a full disk
    with caplog.at_level("WARNING"):
        resume = checkpoint.choose_resume(candidates, world_size=1, rank=0)
    assert resume.path == older and not resume.universal
    assert any("zero_pp_rank_0_optim.pt" in r.message and newest.name in r.message for r in caplog.records)
    (older / "zero_pp_rank_0_optim.pt").unlink()
    with pytest.raises(ConfigError) as err:
        checkpoint.choose_resume(candidates, world_size=1, rank=0)
    message = str(err.value)
    assert message.startswith("trainer.resume: no intact checkpoint") and "\n" not in message
    assert newest.name in message and older.name in message


def test_an_explicit_damaged_checkpoint_is_not_replaced_by_another(tmp_path):
    root = checkpoint.checkpoint_root(tmp_path)
    saved(root, 4, {"a.pt": b"x"})
    newest = saved(root, 8, {"a.pt": b"y"})
    (newest / "a.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="^trainer.resume: no intact checkpoint"):
        checkpoint.choose_resume(checkpoint.resume_candidates(str(newest), tmp_path), world_size=1, rank=0)


def test_a_checkpoint_without_manifest_loads_unverified(tmp_path):
    path = make(tmp_path, 3)
    assert checkpoint.verify(path) == []
