"""Perplexity: window accounting, a hand-computed value, parity with the model's own loss and
with the YaRN repository's `compute_perplexity`, both aggregations and modes, default lengths,
and an end-to-end run over local files through the data module."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from dprope.config import ConfigError
from dprope.eval.benchmarks.perplexity.config import PerplexityConfig
from dprope.eval.benchmarks.perplexity.data import default_lengths, prepare_perplexity
from dprope.eval.benchmarks.perplexity.windows import document_nll, document_windows, perplexity, plan_windows
from dprope.eval.common import EvalContext


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
        score = perplexity(BigramStub(), [doc], window, stride, batch, bos=None, aggregate="token")
        assert score.tokens == 5
        assert score.perplexity == pytest.approx(288 ** (1 / 5), rel=1e-6)


def test_uniform_model_has_perplexity_vocab_size_token_weighted():
    docs = [[k % 10 for k in range(50)], list(range(7))]
    score = perplexity(BigramStub(vocab=10, boost=0.0), docs, 16, 4, bos=None, aggregate="token")
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
    cfg = PerplexityConfig(lengths=[64, 128], stride=16, max_documents=None, bos_every_window=False)
    data = prepare_perplexity(
        cfg, [list(range(200)), list(range(100)), list(range(128))], EvalContext(max_positions=256)
    )
    assert [len(d) for d in data.documents] == [200, 128]  # min_document_tokens defaults to max(lengths)
    # a BOS before every window: the documents' own leading BOS (id 0 here) is dropped
    with_bos = prepare_perplexity(
        PerplexityConfig(lengths=[64], stride=16), [list(range(100))], EvalContext(256), 0
    )
    assert with_bos.documents == [list(range(1, 100))] and with_bos.bos == 0
    with pytest.raises(ConfigError, match="eval.perplexity.bos_every_window: the tokenizer has no BOS"):
        prepare_perplexity(
            PerplexityConfig(lengths=[64], stride=16), [list(range(100))], EvalContext(256), None
        )
    with pytest.raises(ConfigError, match="eval.perplexity.min_document_tokens"):
        prepare_perplexity(cfg, [list(range(10))], EvalContext(max_positions=256))
    with pytest.raises(ConfigError, match="eval.perplexity.lengths: 128 exceeds"):
        prepare_perplexity(cfg, [list(range(200))], EvalContext(max_positions=100))


def test_function_defaults_are_the_config_defaults():
    """`perplexity()` called with its defaults computes what `eval.perplexity` does by default:
    mean over windows, sliding windows; the BOS (the config puts one before every window) has no
    default, so a caller says which convention it uses."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(perplexity).parameters.items()}
    cfg = PerplexityConfig()
    assert defaults["aggregate"] == cfg.aggregate == "window"
    assert defaults["truncate"] is (cfg.mode == "truncate") is False
    assert defaults["bos"] is inspect.Parameter.empty and cfg.bos_every_window


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lengths", [1]),
        ("stride", 0),
        ("stride", 64),
        ("max_documents", 0),
        ("mode", "full"),
        ("aggregate", "doc"),
    ],
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
        # a BOS before every window: every document token is scored, the first from the BOS alone
        assert row["tokens"] == sum(result.details["document_tokens"])
        assert result.summary[length] == pytest.approx(math.exp(row["mean_window_nll"]))  # YaRN's mean
        assert 1.0 < result.summary[length] < 400.0  # a random model: near the byte vocabulary


def _yarn_reference(model, docs, length, stride, bos, truncate=False):
    """The YaRN scripts' protocol written out with the model's own loss: windows of BOS + L-1
    tokens every S, labels -100 but on the tokens not scored yet, exp(mean of the window losses)."""
    losses = []
    for doc in docs:
        tokens = doc[: length - 1] if truncate else doc
        step = length - 1 if truncate else stride
        done = 0
        for begin in range(0, len(tokens), step):
            end = min(begin + length - 1, len(tokens))
            ids = torch.tensor([[bos, *tokens[begin:end]]])
            labels = ids.clone()
            labels[:, : ids.shape[1] - (end - done)] = -100
            with torch.no_grad():
                losses.append(model(ids, labels=labels).loss.item())
            done = end
            if end == len(tokens):
                break
    return math.exp(sum(losses) / len(losses))


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def random_docs():
    return [
        torch.randint(4, 260, (n,), generator=torch.Generator().manual_seed(seed)).tolist()
        for seed, n in ((1, 300), (2, 200))
    ]


@pytest.mark.parametrize(("truncate", "official"), [(False, 270.5548400878906), (True, 266.6876525878906)])
def test_window_mean_equals_the_yarn_scripts(tiny_model, random_docs, truncate, official):
    # `official`: the YaRN repository's eval/perplexity.py compute_perplexity(encodings, model, tokenizer,
    # add_start_token=True, max_length=128, sliding_window=32, truncate=truncate) on this tiny model
    # (tests/eval/conftest.py, seed 0) and these two documents, with the byte tokenizer (BOS id 1)
    ours = perplexity(
        tiny_model, random_docs, 128, 32, batch_size=4, bos=1, aggregate="window", truncate=truncate
    )
    assert ours.perplexity == pytest.approx(
        _yarn_reference(tiny_model, random_docs, 128, 32, 1, truncate), rel=1e-5
    )
    assert ours.perplexity == pytest.approx(official, rel=1e-4)
    assert ours.windows == (2 if truncate else 7 + 4)  # starts 0, 32, ..., 192 (300 tokens); 0, ..., 96 (200)
    token = perplexity(tiny_model, random_docs, 128, 32, bos=1, aggregate="token", truncate=truncate)
    assert token.perplexity == pytest.approx(math.exp(token.nll / token.tokens))
    assert token.tokens == ours.tokens == (2 * 127 if truncate else 500)


def test_bos_every_window_scores_every_token_and_batches_like_one_at_a_time(tiny_model, random_docs):
    doc = random_docs[0]
    windows = document_windows(tiny_model, doc, 64, 16, batch_size=1, bos=1)
    assert sum(c for _, c in windows) == len(doc)
    batched = document_windows(tiny_model, doc, 64, 16, batch_size=8, bos=1)
    assert [c for _, c in batched] == [c for _, c in windows]
    assert [n for n, _ in batched] == pytest.approx([n for n, _ in windows], rel=1e-4)
    spans = [t for w in plan_windows(len(doc), 63, 16, first_scored=0) for t in range(w.score_from, w.end)]
    assert spans == list(range(len(doc)))


def test_default_lengths_are_multiples_of_the_original_context():
    assert default_lengths(256, 1024) == [256, 512, 768, 1024]
    assert default_lengths(4096, 4096) == [4096]  # a base model: its own context
    assert default_lengths(4096, 16384) == [4096, 8192, 12288, 16384]
    cfg = PerplexityConfig(bos_every_window=False)
    data = prepare_perplexity(cfg, [list(range(1100))], EvalContext(1024, original_length=256))
    assert data.lengths == [256, 512, 768, 1024] and data.stride == 128  # 256 capped at half of 256
    data = prepare_perplexity(cfg, [list(range(20000))], EvalContext(16384, original_length=4096))
    assert data.stride == 256  # the YaRN default


@pytest.mark.slow
def test_demo_export_evaluates_with_default_lengths_and_data(tmp_path):
    """`make demo` exports the tiny model (L = 256) with DPRoPE at s = 4; evaluating it with no
    other option reads the embedded corpus at 256, 512, 768 and 1024 tokens."""
    from dprope.data.tokenizer import byte_tokenizer
    from dprope.model import ModelConfig
    from dprope.rope.registry import default_config
    from dprope.train.engine import build_model, model_hf_config
    from tests.eval.test_cli import run_cli

    tiny = ModelConfig(name="tiny", tokenizer="byte")
    hf_config, _ = model_hf_config(tiny, default_config("dprope", 4.0))
    build_model(tiny, hf_config, "fp32", "sdpa", seed=0).save_pretrained(tmp_path / "hf")
    byte_tokenizer().save_pretrained(tmp_path / "hf")
    proc = run_cli(
        tmp_path / "hydra",
        "model=tiny",
        f"model.pretrained={tmp_path / 'hf'}",
        "eval=perplexity",
        "eval.perplexity.max_documents=1",  # the defaults read 10 whole files: minutes on a CPU
        "eval.perplexity.max_document_tokens=1500",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"eval.output_dir={tmp_path / 'out'}",
        "eval.plots=false",
        "eval.progress=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(results["benchmarks"]["perplexity"]["summary"]) == ["256", "512", "768", "1024"]
    assert results["benchmarks"]["perplexity"]["details"]["stride"] == 128
