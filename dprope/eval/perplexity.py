"""Perplexity on long documents, in the two conventions the field publishes.

Windows (``mode=sliding``, Press et al., 2022; PI, Chen et al., 2023, Sec. 3; the YaRN
repository's ``eval/perplexity.py``): for an evaluation length L, each document is read by
windows starting every S tokens. With ``bos_every_window`` (the default, as the YaRN scripts
do) a window is BOS followed by L - 1 document tokens, and the document's first token is scored
from the BOS alone; without it a window is L document tokens (the document's own BOS first)
and the first token is never scored. Each token is scored once, by the first window that
reaches it: the first window scores all its tokens, every later window only its last tokens
not scored yet (at most S, with at least L - S tokens of context). ``mode=truncate`` (the
Proof-pile protocol of the YaRN scripts) cuts each document to one window and scores it whole.

Aggregation (``aggregate``):
- ``window`` (default, the YaRN scripts): PPL = exp(mean over all windows, of all documents,
  of the window's mean negative log-likelihood); the first window of a document weighs as much
  as a later one that scores only S tokens.
- ``token``: PPL = exp(sum of the negative log-likelihoods / number of scored tokens).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from dprope.config import ConfigError, check_choice
from dprope.eval.common import BenchmarkResult, EvalContext, check_length, markdown_table

MODES = ("sliding", "truncate")
AGGREGATES = ("window", "token")
YARN_STRIDE = 256  # the YaRN scripts' --sliding-window default


@dataclass
class PerplexityConfig:
    lengths: list[int] | None = (
        None  # window sizes L (tokens); null = 1, 2, ... x the checkpoint's original context, up to its max_position_embeddings
    )
    stride: int | None = (
        None  # S: tokens between window starts; null = 256 (YaRN), or half the shortest length when smaller
    )
    mode: str = "sliding"  # sliding (windows every S tokens) | truncate (each document cut to one window: Proof-pile protocol)
    aggregate: str = "window"  # window: exp(mean window NLL), as the YaRN scripts | token: token-weighted
    bos_every_window: bool = True  # each window = BOS + L-1 document tokens (YaRN); false: L tokens, BOS only at the document start
    split: str = "test"  # split of the `data` preset to read (local files: a split of data.paths)
    max_documents: int | None = 10  # documents used (after the length filter); null = all
    min_document_tokens: int | None = None  # skip shorter documents; null = max(lengths)
    max_document_tokens: int | None = None  # cut documents to this many tokens; null = whole documents

    def __post_init__(self) -> None:
        if self.lengths is not None and (not self.lengths or any(n < 2 for n in self.lengths)):
            raise ConfigError(
                "lengths", f"must be null or a non-empty list of lengths >= 2 (got {self.lengths})"
            )
        if self.stride is not None and self.stride < 1:
            raise ConfigError("stride", f"must be >= 1 or null (got {self.stride})")
        if self.lengths is not None and self.stride is not None and self.stride > min(self.lengths) - 1:
            raise ConfigError(
                "stride",
                f"must be in [1, min(lengths) - 1] = [1, {min(self.lengths) - 1}] (got {self.stride})",
            )
        check_choice(self, "mode", MODES)
        check_choice(self, "aggregate", AGGREGATES)
        if self.max_documents is not None and self.max_documents < 1:
            raise ConfigError("max_documents", f"must be >= 1 or null (got {self.max_documents})")


def default_lengths(original_length: int, max_positions: int) -> list[int]:
    """1, 2, ... x the original context L up to max_position_embeddings (just L for a base model)."""
    count = max(1, max_positions // original_length)
    return [k * original_length for k in range(1, count + 1)]


@dataclass(frozen=True)
class Window:
    begin: int  # first document token fed to the model
    end: int  # one past the last document token fed
    score_from: int  # first token scored; tokens [score_from, end) are scored

    @property
    def size(self) -> int:
        return self.end - self.begin

    @property
    def scored(self) -> int:
        return self.end - self.score_from


def plan_windows(num_tokens: int, window: int, stride: int, first_scored: int = 1) -> list[Window]:
    """Windows of at most ``window`` document tokens every ``stride``; their scored spans
    partition [first_scored, num_tokens) (0 when a BOS precedes every window, else 1)."""
    windows, scored_until = [], first_scored
    for begin in range(0, num_tokens, stride):
        end = min(begin + window, num_tokens)
        if end > scored_until:
            windows.append(Window(begin, end, scored_until))
            scored_until = end
        if end == num_tokens:
            break
    return windows


@torch.inference_mode()
def window_nll(
    model, ids: Sequence[int], windows: Sequence[Window], prefix: Sequence[int] = ()
) -> list[float]:
    """Summed negative log-likelihood of the scored tokens of each of the same-shaped ``windows``
    (one batch); ``prefix`` (the BOS) goes before every window."""
    device = next(model.parameters()).device
    rows = [[*prefix, *ids[w.begin : w.end]] for w in windows]
    batch = torch.tensor(rows, dtype=torch.long, device=device)  # (B, prefix + size)
    scored = windows[0].scored
    keep = scored + 1  # logits from the position before the first scored token
    try:  # only the logits needed: (B, keep, V) instead of (B, L, V)
        logits = model(input_ids=batch, logits_to_keep=keep, use_cache=False).logits
    except TypeError:  # a model class without logits_to_keep
        logits = model(input_ids=batch, use_cache=False).logits
    logits = logits[:, -keep:-1].float()  # (B, scored, V)
    targets = batch[:, -scored:]  # (B, scored)
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1))
    return (-logprobs.sum(dim=(1, 2))).tolist()


def document_windows(
    model, ids: Sequence[int], window: int, stride: int, batch_size: int = 1, bos: int | None = None
) -> list[tuple[float, int]]:
    """(summed NLL, scored tokens) of each window of one document; with ``bos``, every window is
    BOS + ``window - 1`` document tokens. Windows of equal shape share a forward pass."""
    prefix = () if bos is None else (bos,)
    plan = plan_windows(len(ids), window - len(prefix), stride, 0 if prefix else 1)
    out, start = [], 0
    while start < len(plan):
        shape = (plan[start].size, plan[start].scored)
        stop = start + 1
        while (
            stop < len(plan) and stop - start < batch_size and (plan[stop].size, plan[stop].scored) == shape
        ):
            stop += 1
        sums = window_nll(model, ids, plan[start:stop], prefix)
        out += [(nll, w.scored) for nll, w in zip(sums, plan[start:stop], strict=True)]
        start = stop
    return out


def document_nll(
    model, ids: Sequence[int], window: int, stride: int, batch_size: int = 1, bos: int | None = None
) -> tuple[float, int]:
    """(summed NLL, scored tokens) of one document."""
    windows = document_windows(model, ids, window, stride, batch_size, bos)
    return sum(n for n, _ in windows), sum(c for _, c in windows)


@dataclass
class PerplexityScore:
    length: int
    perplexity: float
    nll: float  # summed over scored tokens
    tokens: int  # scored tokens
    documents: int
    windows: int
    mean_window_nll: float  # mean over windows of each window's mean NLL


def perplexity(
    model,
    documents: Iterable[Sequence[int]],
    window: int,
    stride: int,
    batch_size: int = 1,
    progress: bool = False,
    *,
    bos: int | None = None,
    aggregate: str = "token",
    truncate: bool = False,
) -> PerplexityScore:
    """Perplexity of ``documents`` (token-id lists) at ``window``; see the module docstring."""
    docs = list(documents)
    windows: list[tuple[float, int]] = []
    for ids in tqdm(docs, desc=f"perplexity@{window}", disable=not progress, leave=False):
        if truncate:  # one window: the document cut to fit
            ids = ids[: window - (bos is not None)]
            windows += document_windows(model, ids, window, max(len(ids), 1), batch_size, bos)
        else:
            windows += document_windows(model, ids, window, stride, batch_size, bos)
    total, count = sum(n for n, _ in windows), sum(c for _, c in windows)
    if count == 0:
        raise ConfigError("eval.perplexity", "no token to score (documents shorter than 2 tokens?)")
    mean_window = sum(n / c for n, c in windows) / len(windows)
    ppl = math.exp(mean_window if aggregate == "window" else total / count)
    return PerplexityScore(window, ppl, total, count, len(docs), len(windows), mean_window)


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


def run_perplexity(model, cfg: PerplexityConfig, data: PerplexityData, ctx: EvalContext) -> BenchmarkResult:
    scores = [
        perplexity(
            model,
            data.documents,
            length,
            data.stride,
            ctx.batch_size,
            ctx.progress,
            bos=data.bos,
            aggregate=cfg.aggregate,
            truncate=cfg.mode == "truncate",
        )
        for length in data.lengths
    ]
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
    details = {
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
