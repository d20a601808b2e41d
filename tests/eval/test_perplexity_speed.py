"""Perplexity batches its windows by a token budget (``batch_tokens``) with the same result as one
window at a time, and shows one progress bar over the tokens of every length, whose total is
what the windows feed the model."""

from __future__ import annotations

import io
import random

import pytest
import torch

from dprope.eval.benchmarks import perplexity as benchmark
from dprope.eval.benchmarks.perplexity.config import PerplexityConfig
from dprope.eval.benchmarks.perplexity.data import prepare_perplexity
from dprope.eval.common import EvalContext
from tests.eval.test_perplexity import BigramStub


class RecordingStub(BigramStub):
    """The bigram stub, recording the batch size of every forward pass."""

    def __init__(self):
        super().__init__()
        self.batches: list[tuple[int, int]] = []

    def forward(self, input_ids, logits_to_keep=0, use_cache=False):
        self.batches.append(tuple(input_ids.shape))
        return super().forward(input_ids, logits_to_keep, use_cache)


def test_windows_per_pass():
    assert benchmark.windows_per_pass(PerplexityConfig(), 256, 1) == 64  # default 16384 tokens
    assert benchmark.windows_per_pass(PerplexityConfig(), 16384, 1) == 1
    assert benchmark.windows_per_pass(PerplexityConfig(), 32768, 1) == 1  # at least one window
    assert benchmark.windows_per_pass(PerplexityConfig(batch_tokens=None), 256, 4) == 4  # eval.batch_size
    assert benchmark.windows_per_pass(PerplexityConfig(batch_tokens=1024), 256, 8) == 8  # the larger


@pytest.fixture
def data():
    rng = random.Random(0)
    docs = [[rng.randrange(3, 10) for _ in range(n)] for n in (400, 250, 333)]
    cfg = PerplexityConfig(lengths=[32, 64], stride=8)
    return prepare_perplexity(cfg, docs, EvalContext(max_positions=64), bos=1)


class RecordingBar(benchmark.tqdm):
    bars: list[RecordingBar] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "file": io.StringIO()})
        RecordingBar.bars.append(self)


def test_batched_by_tokens_equals_one_window_at_a_time(data, monkeypatch):
    monkeypatch.setattr(benchmark, "tqdm", RecordingBar)
    RecordingBar.bars.clear()
    ctx = EvalContext(max_positions=64, progress=True)
    batched_model, single_model = RecordingStub(), RecordingStub()
    with torch.inference_mode():
        batched = benchmark.run_perplexity(
            batched_model, None, PerplexityConfig(lengths=[32, 64], stride=8, batch_tokens=256), data, ctx
        )
        single = benchmark.run_perplexity(
            single_model, None, PerplexityConfig(lengths=[32, 64], stride=8, batch_tokens=None), data, ctx
        )
    assert batched.summary == pytest.approx(single.summary, rel=1e-12)
    assert batched.details["by_length"] == single.details["by_length"]
    assert {b for b, _ in single_model.batches} == {1}
    by_length = {length: [b for b, n in batched_model.batches if n == length] for length in (32, 64)}
    assert max(by_length[32]) == 256 // 32 and max(by_length[64]) == 256 // 64  # the token budget
    assert len(batched_model.batches) < len(single_model.batches) / 3
    # one bar per run, over every window's tokens at every length, and it ends full
    windows = {n: batched.details["by_length"][str(n)]["windows"] for n in (32, 64)}
    first = RecordingBar.bars[0]
    assert first.total == 32 * windows[32] + 64 * windows[64] == first.n
    assert len(RecordingBar.bars) == 2 and first.unit == "tok"
