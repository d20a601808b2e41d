"""The logged MFU of a real run equals tokens/s x FLOPs per token / peak, with the FLOPs counted
here from the exported HF config (PaLM convention: 6N + 12 * layers * heads * head_dim * seq)."""

from __future__ import annotations

import json
import math

import pytest

from tests.train.conftest import read_metrics, run_train, small_run

PEAK_TFLOPS = 0.002  # a made-up peak, so the tiny model's MFU is a readable number
SEQ_LEN = 256
GLOBAL_BATCH = 4


def non_embedding_parameters(config: dict) -> int:
    """Every weight of a Llama decoder but the input embedding, from the config's sizes."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o; k, v
    mlp = 3 * hidden * config["intermediate_size"]  # gate, up, down
    norms = 2 * hidden
    head = 0 if config.get("tie_word_embeddings") else config["vocab_size"] * hidden
    return layers * (attention + mlp + norms) + hidden + head


@pytest.mark.slow
def test_logged_mfu_matches_an_independent_count(tmp_path, data_cache):
    result = run_train(
        small_run(
            tmp_path,
            data_cache,
            "trainer.steps=2",
            f"data.max_length={SEQ_LEN}",
            f"trainer.global_batch_size={GLOBAL_BATCH}",
            f"trainer.peak_tflops={PEAK_TFLOPS}",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert not config.get("attention_bias") and not config.get("mlp_bias")
    n = non_embedding_parameters(config)
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    flops_per_token = (
        6 * n + 12 * config["num_hidden_layers"] * config["num_attention_heads"] * head_dim * SEQ_LEN
    )
    records = read_metrics(tmp_path)
    assert len(records) == 2
    for record in records:
        tokens_per_s = GLOBAL_BATCH * SEQ_LEN / record["step_time_s"]
        assert math.isclose(record["tokens_per_s"], tokens_per_s, rel_tol=1e-9)
        expected = tokens_per_s * flops_per_token / (PEAK_TFLOPS * 1e12)
        assert math.isclose(record["mfu"], expected, rel_tol=1e-9), (record["mfu"], expected)


@pytest.mark.parametrize(
    "name,tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),  # SXM
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA H800 PCIe", 756.0),
        ("NVIDIA L4", None),
    ],
)
def test_peak_table_matches_form_factors_before_families(name, tflops):
    from dprope.train.metrics import table_peak_tflops

    assert table_peak_tflops(name) == tflops


def test_peak_memory_is_per_interval_after_a_reset():
    """The per-step metric is the step's peak: reading it with ``reset`` starts a new interval,
    so a large allocation freed before the next interval no longer shows there."""
    import torch

    from dprope.train.metrics import CLEAR_REFS, peak_memory_gib

    if not CLEAR_REFS.exists():
        pytest.skip("the resident peak can only be reset on Linux")
    peak_memory_gib(reset=True)
    block = torch.ones(2**28, dtype=torch.uint8)  # 256 MiB, touched
    del block
    with_block = peak_memory_gib(reset=True)
    without = peak_memory_gib(reset=True)
    assert with_block - without > 0.2  # GiB
