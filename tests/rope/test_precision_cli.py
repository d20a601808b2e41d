"""`launch/precision.py` end to end on the tiny preset: table, precision.json, figure, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "launch" / "precision.py"), *overrides]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_precision_cli_writes_table_json_and_plot(tmp_path):
    result = run(f"precision.output_dir={tmp_path}", "precision.length=64", "precision.buckets=2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bf16 / fp32 rotation" in result.stdout and "1st tok" in result.stdout
    data = json.loads((tmp_path / "precision.json").read_text())
    assert data["shift"] == 4096 and data["bucket_edges"] == [0, 32, 64]
    assert set(data["mean_logit_deviation"]) == {"bf16 / model rotation", "bf16 / fp32 rotation", "float32"}
    assert (tmp_path / "precision.png").stat().st_size > 0


def test_bad_length_is_one_line(tmp_path):
    result = run(f"precision.output_dir={tmp_path}", "precision.length=0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: precision.length: must be positive (got 0)"]
