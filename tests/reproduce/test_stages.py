"""Stage caching: done stages are skipped, changed ones redone, unfinished ones continued, and a
failure leaves the finished stages intact."""

from __future__ import annotations

import json

import pytest

from dprope.reproduce.stages import DONE, Stage, StageFailed, StageStore


def counting_stage(name: str, calls: list, key: dict | None = None, fail: bool = False) -> Stage:
    def run(directory):
        calls.append(name)
        # a partial output first: what a killed stage leaves behind
        partial = directory / "partial.txt"
        partial.write_text(partial.read_text() + "x" if partial.exists() else "x")
        if fail:
            raise RuntimeError("boom\nsecond line")
        (directory / "out.txt").write_text(name)
        return {"value": len(calls)}

    return Stage(name, key or {"name": name}, run)


def test_done_stage_is_skipped_with_its_summary(tmp_path):
    store, calls = StageStore(tmp_path), []
    first = store.run(counting_stage("a/b", calls))
    again = store.run(counting_stage("a/b", calls))
    assert calls == ["a/b"]
    assert first["skipped"] is False and again["skipped"] is True
    assert again["summary"] == {"value": 1} and again["elapsed_s"] == first["elapsed_s"]


def test_changed_key_starts_over_in_an_emptied_directory(tmp_path):
    store, calls = StageStore(tmp_path), []
    store.run(counting_stage("s", calls, {"lr": 1}))
    store.run(counting_stage("s", calls, {"lr": 2}))
    assert calls == ["s", "s"]
    assert (tmp_path / "s" / "partial.txt").read_text() == "x"  # not "xx": old outputs were removed
    assert json.loads((tmp_path / "s" / DONE).read_text())["summary"] == {"value": 2}


def test_failure_keeps_finished_stages_and_a_rerun_continues_in_place(tmp_path):
    store, calls = StageStore(tmp_path), []
    store.run(counting_stage("done", calls))
    with pytest.raises(StageFailed) as err:
        store.run(counting_stage("broken", calls, fail=True))
    assert str(err.value) == "stage broken failed: RuntimeError: boom"
    assert (tmp_path / "done" / DONE).exists() and not (tmp_path / "broken" / DONE).exists()

    store.run(counting_stage("done", calls))
    store.run(counting_stage("broken", calls))  # same key: continues where it stopped
    assert calls == ["done", "broken", "broken"]
    assert (tmp_path / "broken" / "partial.txt").read_text() == "xx"


def test_corrupt_done_marker_is_not_trusted(tmp_path):
    store, calls = StageStore(tmp_path), []
    store.run(counting_stage("s", calls))
    (tmp_path / "s" / DONE).write_text("{truncated")
    store.run(counting_stage("s", calls))
    assert calls == ["s", "s"]
