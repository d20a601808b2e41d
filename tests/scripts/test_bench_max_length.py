"""The maximum-length benchmark: its search, one real attempt in process, and the CPU smoke run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scripts.bench_max_length import (
    attempt,
    compose_run,
    describe_model_states,
    longest_fitting,
    model_states_gib,
)
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


def llama_parameters(layers: int, hidden=4096, intermediate=11008, vocab=32000) -> int:
    """LLaMA-2-7B's shape counted by hand: attention q/k/v/o, gated MLP, two norms per layer;
    input and output embeddings (untied) and the final norm."""
    return (
        layers * (4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden) + 2 * vocab * hidden + hidden
    )


@pytest.mark.parametrize(
    "layers,offload,bytes_per_parameter",
    [(None, False, 18), (None, True, 2), (4, False, 18)],
)
def test_model_states_are_said_before_any_attempt(layers, offload, bytes_per_parameter):
    """ZeRO-3 on one GPU holds 18 bytes per parameter (bf16 weights, fp32 gradients, master
    weights and Adam moments), 2 with the optimizer offloaded, plus the largest layer in fp32
    (the embedding): the 7B shape needs about 113 GiB before any activation."""
    run = compose_run("plain", 4096, False, 1, layers, offload)
    assert run.model.num_hidden_layers == (layers or 32) and run.trainer.offload_optimizer is offload
    states = model_states_gib(run, 1)
    parameters = llama_parameters(layers or 32)
    assert states["parameters"] == parameters
    expected = (bytes_per_parameter * parameters + 4 * 32000 * 4096) / 2**30
    assert states["gpu_gib"] == pytest.approx(expected, rel=1e-6)
    line = describe_model_states(states, 1, offload)
    assert f"{expected:.1f} GiB per GPU" in line
    if layers is None and not offload:
        assert 113 < expected < 114


@pytest.mark.slow
def test_smoke_run_prints_every_option(tmp_path):
    output = tmp_path / "max_length.json"
    command = [sys.executable, "scripts/bench_max_length.py", "--smoke", "--options", "plain", "tiled", "sp"]
    command += ["--layers", "1", "--offload-optimizer"]  # DeepSpeed's CPU Adam: compiled on first use
    done = subprocess.run(
        [*command, "--output", str(output)],
        cwd=ROOT,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "model states (" in done.stdout and "optimizer offloaded to the CPU" in done.stdout
    results = {r["option"]: r for r in json.loads(output.read_text())}
    assert set(results) == {"plain", "tiled", "sp"}
    for result in results.values():
        assert result["max_length"] == 256 and result["tokens_per_s"] > 0  # no limit on CPU: the longest
        assert result["model_states"]["parameters"] > 0
    assert results["sp"]["world_size"] == 2
    assert "tiled MLP in 1 module(s)" in results["tiled"]["transforms"]  # --layers 1
