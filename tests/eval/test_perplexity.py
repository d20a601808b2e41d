"""Sliding-window perplexity: window accounting, a hand-computed value, parity with the model's
own loss, and an end-to-end run over local files through the data module."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from dprope.config import ConfigError
from dprope.eval.common import EvalContext
from dprope.eval.perplexity import (
    PerplexityConfig,
    document_nll,
    perplexity,
    plan_windows,
    prepare_perplexity,
)


class BigramStub(torch.nn.Module):
    """Logits: ``boost`` on token (t + 1) % vocab after token t, 0 elsewhere."""

    def __init__(self, vocab: int = 10, boost: float = math.log(9.0)):
        super().__init__()
        self.vocab, self.boost = vocab, boost
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, logits_to_keep=0, use_cache=False):
        kept = input_ids[:, -logits_to_keep:] if logits_to_keep else input_ids
        logits = torch.zeros(*kept.shape, self.vocab)
        logits.scatter_(-1, ((kept + 1) % self.vocab).unsqueeze(-1), self.boost)
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize(
    ("n", "window", "stride"), [(1000, 128, 32), (100, 128, 16), (129, 128, 1), (7, 3, 2), (2, 2, 1)]
)
def test_scored_spans_partition_every_token_but_the_first(n, window, stride):
    windows = plan_windows(n, window, stride)
    scored = [t for w in windows for t in range(w.score_from, w.end)]
    assert scored == list(range(1, n))
    assert all(w.size <= window and w.begin <= w.score_from - 1 for w in windows)
    assert all(w.scored <= stride for w in windows[1:])  # later windows score at most S tokens...
    assert all(w.score_from - w.begin >= window - stride for w in windows[1:])  # ...with >= L - S context


def test_hand_computed_value_for_any_window_and_batch():
    # V = 10, boost ln 9: p(hit) = 9 / (9 + 9) = 1/2, p(miss) = 1/18.
    # 0->1, 1->2, 2->3 hit, 3->5 miss, 5->6 hit: PPL = exp((4 ln 2 + ln 18) / 5) = 288 ** (1/5)
    doc = [0, 1, 2, 3, 5, 6]
    for window, stride, batch in [(6, 5, 1), (3, 1, 1), (3, 1, 4), (4, 2, 2)]:
        score = perplexity(BigramStub(), [doc], window, stride, batch)
        assert score.tokens == 5
        assert score.perplexity == pytest.approx(288 ** (1 / 5), rel=1e-6)


def test_uniform_model_has_perplexity_vocab_size_token_weighted():
    docs = [[k % 10 for k in range(50)], list(range(7))]
    score = perplexity(BigramStub(vocab=10, boost=0.0), docs, 16, 4)
    assert score.perplexity == pytest.approx(10.0)
    assert score.tokens == 49 + 6 and score.documents == 2


def test_one_window_equals_the_models_own_loss(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(4, 260, (300,), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.no_grad():
        loss = model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    nll, count = document_nll(model, ids, window=512, stride=128)
    assert count == 299
    assert nll / count == pytest.approx(loss, rel=1e-4)
    # sliding windows: batching windows of equal shape changes nothing
    one = document_nll(model, ids, window=64, stride=16, batch_size=1)
    many = document_nll(model, ids, window=64, stride=16, batch_size=8)
    assert many[1] == one[1] and many[0] == pytest.approx(one[0], rel=1e-4)


def test_short_documents_are_skipped_and_lengths_checked():
    cfg = PerplexityConfig(lengths=[64, 128], stride=16, max_documents=None)
    docs = prepare_perplexity(
        cfg, [list(range(200)), list(range(100)), list(range(128))], EvalContext(max_positions=256)
    )
    assert [len(d) for d in docs] == [200, 128]  # min_document_tokens defaults to max(lengths)
    with pytest.raises(ConfigError, match="eval.perplexity.min_document_tokens"):
        prepare_perplexity(cfg, [list(range(10))], EvalContext(max_positions=256))
    with pytest.raises(ConfigError, match="eval.perplexity.lengths: 128 exceeds"):
        prepare_perplexity(cfg, [list(range(200))], EvalContext(max_positions=100))


@pytest.mark.parametrize(
    ("field", "value"), [("lengths", [1]), ("stride", 0), ("stride", 64), ("max_documents", 0)]
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"^{field}"):
        PerplexityConfig(**{"lengths": [64, 128], "stride": 16, field: value})


def test_end_to_end_on_local_files_through_the_data_module(tiny_eval_model, text_documents, tmp_path):
    from dprope.data import data_config
    from dprope.eval.suite import EvalConfig, run_suite

    data = data_config(
        {
            "name": "eval-test",
            "source": "files",
            "paths": {"test": [str(p) for p in text_documents]},
            "cache_dir": str(tmp_path),
        }
    )
    settings = EvalConfig(
        tasks=["perplexity"],
        progress=False,
        batch_size=4,
        perplexity=PerplexityConfig(lengths=[128, 256], stride=64),
    )
    result = run_suite(tiny_eval_model, settings, data).benchmarks["perplexity"]
    assert set(result.summary) == {"128", "256"}
    assert result.details["documents"] == 2  # the 10-word document is shorter than 256 tokens
    for length in ("128", "256"):
        row = result.details["by_length"][length]
        assert row["tokens"] == sum(n - 1 for n in result.details["document_tokens"])
        assert result.summary[length] == pytest.approx(math.exp(row["nll"] / row["tokens"]))
        assert 1.0 < result.summary[length] < 400.0  # a random model: near the byte vocabulary
