"""Loss by position against an independent computation, and against the suite's perplexity."""

from __future__ import annotations

import math

import pytest
import torch

from dprope.eval.benchmarks.perplexity.windows import perplexity
from dprope.reproduce.measure import loss_by_position, measure


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def documents():
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 50, (40,), generator=generator).tolist() for _ in range(3)]


def test_position_m_is_the_loss_of_token_m_given_the_m_before(model, documents):
    curve = loss_by_position(model, documents, 24, batch_size=2)
    assert len(curve) == 23
    for m in (1, 7, 23):  # a forward pass over only the prefix: causality makes it the same number
        expected = 0.0
        for doc in documents:
            logits = model(input_ids=torch.tensor([doc[: m + 1]])).logits[0, -2]
            expected -= torch.log_softmax(logits, -1)[doc[m]].item() / len(documents)
        assert curve[m - 1] == pytest.approx(expected, rel=1e-5)


def test_mean_loss_matches_the_suite_perplexity_of_one_window(model, documents):
    length = 24
    curve = loss_by_position(model, documents, length)
    reference = perplexity(
        model, [d[:length] for d in documents], length, stride=8, bos=None, aggregate="token"
    )
    assert math.exp(sum(curve) / len(curve)) == pytest.approx(reference.perplexity, rel=1e-5)


def test_measure_splits_at_the_pre_training_length(model, documents):
    result = measure(model, documents, [8, 16, 24], stride=4, pretrain_length=8, batch_size=4)
    curve = result["loss_by_position"]
    assert set(result["perplexity"]) == {"8", "16", "24"}
    assert result["mean_loss"]["within_L"] == pytest.approx(sum(curve[:7]) / 7)
    assert result["mean_loss"]["beyond_L"] == pytest.approx(sum(curve[7:]) / 16)


def test_perplexity_is_the_suites_with_token_weighting_no_bos_per_window_and_its_stride(model, documents):
    """The module docstring's claim: measure's perplexity is what `launch/eval.py eval=perplexity`
    reports with aggregate=token, bos_every_window=false and the same stride, on the same documents;
    the suite's defaults (mean over windows, a BOS before every window) give other numbers."""
    from dprope.eval.benchmarks.perplexity import BENCHMARK
    from dprope.eval.benchmarks.perplexity.config import PerplexityConfig
    from dprope.eval.benchmarks.perplexity.data import prepare_perplexity
    from dprope.eval.common import EvalContext

    lengths, stride, ctx = [8, 16, 24], 4, EvalContext(max_positions=64, progress=False)
    measured = measure(model, documents, lengths, stride=stride, pretrain_length=8)["perplexity"]

    def suite(**overrides) -> dict[str, float]:
        cfg = PerplexityConfig(lengths=lengths, stride=stride, **overrides)
        return BENCHMARK.run(model, None, cfg, prepare_perplexity(cfg, documents, ctx, bos=0), ctx).summary

    same = suite(aggregate="token", bos_every_window=False)
    assert same == pytest.approx(measured, rel=1e-6)
    defaults = suite()
    assert all(defaults[n] != pytest.approx(measured[n], rel=1e-3) for n in ("16", "24"))
