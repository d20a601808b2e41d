"""scripts/bench_attention.py: a row per mode, and attention FLOPs that count the visible pairs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from dprope.train.attention import document_mask

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_attention.py"


def bench():
    spec = importlib.util.spec_from_file_location("bench_attention", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_flops_count_exactly_the_pairs_the_mask_lets_through():
    module = bench()
    items = module.packed_items(128, 2, "exp:20", seed=1, vocab=260)
    heads, head_dim, layers = 4, 16, 2
    causal = module.collate(items, "causal")
    assert (
        module.attention_flops(causal, "causal", heads, head_dim, layers)
        == 12 * 2 * (128 * 129 // 2) * 64 * 2
    )
    for mode in ("document", "anchor"):
        batch = module.collate(items, mode)
        pairs = int(document_mask(batch["segment_ids"]).sum())  # brute force over the dense mask
        assert (
            module.attention_flops(batch, mode, heads, head_dim, layers)
            == 12 * pairs * head_dim * heads * layers
        )
        assert pairs < 2 * 128 * 129 // 2


def test_smoke_writes_a_row_per_mode(tmp_path, capsys):
    output = tmp_path / "rows.json"
    assert bench().main(["--smoke", "--output", str(output)]) == 0
    rows = json.loads(output.read_text())
    assert [r["mode"] for r in rows] == ["causal", "document", "anchor"]
    assert rows[0]["attention_flops_vs_causal"] == 1.0
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert rows[1]["attention_flops_vs_causal"] == rows[2]["attention_flops_vs_causal"] < 1
    assert "anchor: SDPA with an explicit document mask" in capsys.readouterr().out
    assert torch.get_default_dtype() == torch.float32


def test_a_row_per_kernel_and_mode_with_peak_memory(tmp_path):
    output = tmp_path / "rows.json"
    assert (
        bench().main(
            [
                "--smoke",
                "--modes",
                "causal,document",
                "--kernels",
                "sdpa,flash_attention_2",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    rows = json.loads(output.read_text())
    assert [(r["implementation"], r["mode"]) for r in rows] == [
        ("sdpa", "causal"),
        ("sdpa", "document"),
        ("flash_attention_2", "causal"),
        ("flash_attention_2", "document"),
    ]
    assert all(r["peak_memory_gib"] > 0 for r in rows[:2])
    if not torch.cuda.is_available():  # a kernel that cannot run is a row saying why
        assert all("needs flash-attn and a CUDA GPU" in r["skipped"] for r in rows[2:])
