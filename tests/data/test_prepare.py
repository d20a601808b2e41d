"""`launch/prepare_data.py`: builds the cache a training run will ask for, then reuses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def prepare(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DPROPE_DATA_CACHE": str(tmp_path / "cache"),
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }
    command = [sys.executable, str(ROOT / "launch" / "prepare_data.py"), f"hydra.run.dir={tmp_path / 'run'}"]
    return subprocess.run(
        [*command, *overrides], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_prepare_builds_then_reuses(tmp_path):
    overrides = ("data.max_documents=20", "trainer.steps=3", "trainer.global_batch_size=4", "data.num_proc=1")
    first = prepare(tmp_path, *overrides)
    assert first.returncode == 0, first.stderr
    # steps x global batch = 12 sequences, rounded up to a whole shuffle block (dprope.data.sampler)
    assert "built" in first.stdout and "1024 sequences of 1024 tokens" in first.stdout
    second = prepare(tmp_path, *overrides)
    assert second.returncode == 0 and "reused" in second.stdout, second.stderr


@pytest.mark.slow
def test_prepare_refuses_a_length_beyond_the_target_context(tmp_path):
    result = prepare(tmp_path, "data.max_length=4096")
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: data.max_length: 4096 exceeds the target context s x L = 1024"
    )
