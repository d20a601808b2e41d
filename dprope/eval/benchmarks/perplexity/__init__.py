"""Perplexity on long documents of the `data` preset (PG19 for the LLaMA presets), as the YaRN
repository's ``eval/perplexity.py``: the windows, BOS and aggregation conventions are in `windows`,
the lengths, stride and documents in `data`. Figure: ``perplexity.png`` (log scale).
"""

from __future__ import annotations

import logging

from tqdm.auto import tqdm

from dprope.eval.benchmark import Benchmark, Display, Inputs
from dprope.eval.benchmarks.perplexity.config import PerplexityConfig
from dprope.eval.benchmarks.perplexity.data import PerplexityData, read_documents
from dprope.eval.benchmarks.perplexity.windows import count_windows, perplexity
from dprope.eval.common import BenchmarkResult, EvalContext, markdown_table

log = logging.getLogger(__name__)


def prepare(cfg: PerplexityConfig, inputs: Inputs) -> PerplexityData:
    return read_documents(cfg, inputs.data, inputs.tokenizer, inputs.ctx)


def windows_per_pass(cfg: PerplexityConfig, length: int, batch_size: int) -> int:
    """Windows of one forward pass at ``length``: ``eval.batch_size``, or more where
    ``batch_tokens`` tokens hold more windows of that length."""
    return max(batch_size, (cfg.batch_tokens or 0) // length, 1)


def run_perplexity(
    model, tokenizer, cfg: PerplexityConfig, data: PerplexityData, ctx: EvalContext
) -> BenchmarkResult:
    truncate = cfg.mode == "truncate"
    total = sum(n * count_windows(data.documents, n, data.stride, data.bos, truncate) for n in data.lengths)
    # one bar over the tokens of every window of every length: its estimate covers the whole benchmark
    with tqdm(total=total, desc="perplexity", unit="tok", unit_scale=True, disable=not ctx.progress) as bar:
        scores = []
        for length in data.lengths:
            bar.set_postfix_str(f"length {length}")
            scores.append(
                perplexity(
                    model,
                    data.documents,
                    length,
                    data.stride,
                    windows_per_pass(cfg, length, ctx.batch_size),
                    bar,
                    bos=data.bos,
                    aggregate=cfg.aggregate,
                    truncate=truncate,
                )
            )
    summary = {str(s.length): s.perplexity for s in scores}
    how = (
        "one window per document (truncated)"
        if cfg.mode == "truncate"
        else f"sliding windows, stride {data.stride}"
    )
    weight = "mean over windows (YaRN)" if cfg.aggregate == "window" else "token-weighted"
    bos = "BOS + L-1 tokens per window" if data.bos is not None else "BOS at the document start only"
    markdown = f"Perplexity, {how}, {weight}, {bos}, over {len(data.documents)} documents:\n\n"
    markdown += markdown_table(
        ["length", "perplexity", "scored tokens", "windows", "documents"],
        [[s.length, s.perplexity, s.tokens, s.windows, s.documents] for s in scores],
        3,
    )
    if ctx.chat_template:
        log.info("perplexity: eval.chat_template does not apply (whole documents are scored, no prompt)")
    details = {
        "chat_template": "not applied: whole documents are scored, no prompt" if ctx.chat_template else False,
        "mode": cfg.mode,
        "aggregate": cfg.aggregate,
        "bos_every_window": data.bos is not None,
        "stride": data.stride,
        "by_length": {
            str(s.length): {
                "perplexity": s.perplexity,
                "nll": s.nll,
                "tokens": s.tokens,
                "windows": s.windows,
                "mean_window_nll": s.mean_window_nll,
            }
            for s in scores
        },
        "documents": len(data.documents),
        "document_tokens": data.document_tokens,
    }
    return BenchmarkResult("perplexity", summary, details, [], markdown)


BENCHMARK = Benchmark(
    name="perplexity",
    display=Display("Perplexity", "perplexity (lower is better)", digits=3, percent=False, log_scale=True),
    config=PerplexityConfig,
    prepare=prepare,
    run=run_perplexity,
    reads_data=lambda cfg: True,
)
