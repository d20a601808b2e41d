"""The maximum-length benchmark: its search, one real attempt in process, and the CPU smoke run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scripts.bench_max_length import attempt, longest_fitting
from tests.train.conftest import ROOT, train_env


@pytest.mark.parametrize("threshold", [0, 63, 64, 65, 640, 1000, 4096, 5000])
def test_search_finds_the_last_fitting_multiple(threshold):
    tried = []

    def fits(length):
        tried.append(length)
        return length <= threshold

    best, attempts = longest_fitting(fits, 64, 4096, 64)
    expected = None if threshold < 64 else min(4096, threshold // 64 * 64)
    assert best == expected
    assert attempts == [(t, t <= threshold) for t in tried]
    assert len(tried) <= 2 + 6  # max, min, then log2(64 granules)


def test_one_attempt_trains_a_tiled_offloaded_step_and_reports_its_speed():
    result = attempt("tiled+offload", 128, smoke=True, memory_limit_gib=None)
    assert result["ok"] and result["tokens_per_s"] > 0 and result["world_size"] == 1
    assert result["mfu"] is None  # no GPU peak on CPU
    # the trainer's plan chose the kernels, the attention, the transforms and the micro-step
    assert result["kernels"] == "none" and result["attention"] == "sdpa (causal over the window)"
    assert result["micro_step"] == "TiledLossStep"
    assert result["transforms"] == [
        "activation checkpointing",
        "tiled MLP in 2 module(s)",
        "DeepSpeed wrap",
        "final hidden states captured",
        "rotary frequencies restored in float32 in 1 module(s)",
    ]
    over = attempt("plain", 128, smoke=True, memory_limit_gib=1e-3)  # any process uses more than 1 MiB
    assert not over["ok"] and "over the limit" in over["reason"]


@pytest.mark.slow
def test_smoke_run_prints_every_option(tmp_path):
    output = tmp_path / "max_length.json"
    command = [sys.executable, "scripts/bench_max_length.py", "--smoke", "--options", "plain", "tiled", "sp"]
    done = subprocess.run(
        [*command, "--output", str(output)],
        cwd=ROOT,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["option"]: r for r in json.loads(output.read_text())}
    assert set(results) == {"plain", "tiled", "sp"}
    for result in results.values():
        assert result["max_length"] == 256 and result["tokens_per_s"] > 0  # no limit on CPU: the longest
    assert results["sp"]["world_size"] == 2
