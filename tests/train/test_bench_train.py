"""`scripts/bench_train.py --smoke` runs every configuration on CPU and prints the table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.train.conftest import ROOT, train_env


@pytest.mark.slow
def test_smoke_benchmark_prints_the_table(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_train.py"), "--smoke", "--output", str(tmp_path)],
        cwd=ROOT,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "| seq | configuration | tokens/s | MFU | peak alloc GiB |" in result.stdout
    rows = {row["config"]: row for row in json.loads((tmp_path / "bench_train.json").read_text())["results"]}
    assert set(rows) == {"hf_trainer", "dprope_none", "dprope_liger"}
    for name in ("hf_trainer", "dprope_none"):
        row = rows[name]
        assert row["tokens_per_s"] > 0 and row["peak_allocated_gib"] > 0, row
        assert len(row["step_times_s"]) == 2  # measured steps, after the warmup step
        assert all(loss == loss for loss in row["losses"])  # finite-ish: no NaN
    assert rows["dprope_none"]["kernels"] == "none"
    # the same FLOP count for the two stacks: same model, same convention
    assert rows["hf_trainer"]["flops_per_token"] == rows["dprope_none"]["flops_per_token"]
    if not torch.cuda.is_available():
        assert "liger needs a CUDA GPU" in rows["dprope_liger"]["skipped"]
    assert (tmp_path / "bench_train.md").read_text().count("\n| 128 |") == 3
