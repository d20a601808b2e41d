"""Perplexity's data, settled before the model loads: the lengths and stride, and the documents of
the `data` preset long enough for every length."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dprope.config import ConfigError
from dprope.eval.benchmarks.perplexity.config import PerplexityConfig
from dprope.eval.common import EvalContext, check_length

YARN_STRIDE = 256  # the YaRN scripts' --sliding-window default


def default_lengths(original_length: int, max_positions: int) -> list[int]:
    """1, 2, ... x the original context L up to max_position_embeddings (just L for a base model)."""
    count = max(1, max_positions // original_length)
    return [k * original_length for k in range(1, count + 1)]


@dataclass
class PerplexityData:
    """What `prepare_perplexity` settles before the model loads."""

    documents: list[list[int]]
    lengths: list[int]
    stride: int
    bos: int | None  # the BOS id put before every window, or None
    document_tokens: list[int] = field(default_factory=list)


def select_documents(
    documents: Iterable[Sequence[int]], cfg: PerplexityConfig, min_tokens: int
) -> list[list[int]]:
    """Documents long enough for every length, cut to max_document_tokens, at most max_documents."""
    selected = []
    for ids in documents:
        if len(ids) < min_tokens:
            continue
        selected.append(list(ids[: cfg.max_document_tokens] if cfg.max_document_tokens else ids))
        if cfg.max_documents is not None and len(selected) >= cfg.max_documents:
            break
    if not selected:
        raise ConfigError(
            "eval.perplexity.min_document_tokens", f"no document has at least {min_tokens} tokens"
        )
    return selected


def resolve_lengths(cfg: PerplexityConfig, ctx: EvalContext) -> tuple[list[int], int]:
    """The lengths (the config's, or multiples of the original context) and the stride."""
    lengths = cfg.lengths or default_lengths(ctx.original_length or ctx.max_positions, ctx.max_positions)
    for length in lengths:
        check_length("eval.perplexity.lengths", length, ctx)
    stride = cfg.stride or min(YARN_STRIDE, max(1, min(lengths) // 2))
    if stride > min(lengths) - 1:
        raise ConfigError(
            "eval.perplexity.stride", f"must be <= min(lengths) - 1 = {min(lengths) - 1} (got {stride})"
        )
    return lengths, stride


def prepare_perplexity(
    cfg: PerplexityConfig, documents: Iterable[Sequence[int]], ctx: EvalContext, bos: int | None = None
) -> PerplexityData:
    """Lengths and stride settled, documents selected (their own leading BOS dropped when a BOS
    goes before every window instead), all before the model loads."""
    lengths, stride = resolve_lengths(cfg, ctx)
    if cfg.bos_every_window and bos is None:
        raise ConfigError(
            "eval.perplexity.bos_every_window",
            "the tokenizer has no BOS token; set it to false for this model",
        )
    min_tokens = max(lengths) if cfg.min_document_tokens is None else cfg.min_document_tokens
    docs = select_documents(documents, cfg, min_tokens)
    if cfg.bos_every_window:
        docs = [d[1:] if d and d[0] == bos else d for d in docs]
    return PerplexityData(
        docs, lengths, stride, bos if cfg.bos_every_window else None, [len(d) for d in docs]
    )


def read_documents(cfg: PerplexityConfig, data, tokenizer, ctx: EvalContext) -> PerplexityData:
    """`prepare_perplexity` over the documents of the `data` preset's ``cfg.split``; length errors
    come before any document is read."""
    if data is None:
        raise ConfigError(
            "data", "perplexity reads its documents through a data preset: choose one with data=<preset>"
        )
    from dprope.data import eval_documents

    lengths, _ = resolve_lengths(cfg, ctx)
    min_tokens = max(lengths) if cfg.min_document_tokens is None else cfg.min_document_tokens
    docs = eval_documents(data, tokenizer, cfg.split, min_tokens, cfg.max_documents)
    return prepare_perplexity(cfg, docs, ctx, tokenizer.bos_token_id)
