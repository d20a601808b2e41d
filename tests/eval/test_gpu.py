"""On a CUDA device: bf16 weights, and the generation and perplexity paths in bf16."""

from __future__ import annotations

import math

import pytest

from dprope.eval.benchmarks.passkey.config import PasskeyConfig
from dprope.eval.benchmarks.perplexity.config import PerplexityConfig


@pytest.mark.gpu
def test_cuda_run_is_bf16(tiny_eval_model, text_documents, tmp_path):
    from dprope.data import data_config
    from dprope.eval.suite import EvalConfig, run_suite

    data = data_config(
        {
            "name": "gpu-test",
            "source": "files",
            "paths": {"test": [str(p) for p in text_documents]},
            "cache_dir": str(tmp_path),
        }
    )
    settings = EvalConfig(
        tasks=["passkey", "perplexity"],
        device="cuda",
        batch_size=8,
        progress=False,
        passkey=PasskeyConfig(lengths=[300, 512], depths=[0.0, 1.0], trials=2),
        perplexity=PerplexityConfig(lengths=[128, 256], stride=64),
    )
    report = run_suite(tiny_eval_model, settings, data)
    assert report.model["dtype"] == "bfloat16" and report.model["device"] == "cuda"
    assert all(math.isfinite(v) for v in report.benchmarks["perplexity"].summary.values())
    assert len(report.benchmarks["passkey"].samples) == 8
