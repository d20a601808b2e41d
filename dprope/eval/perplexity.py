"""Sliding-window perplexity on long documents (the protocol of Press et al., 2022 and of PI,
Chen et al., 2023, Sec. 3: window L, stride S).

Definition. For an evaluation length L, every document of at least ``min_document_tokens``
tokens (cut to ``max_document_tokens`` when set) is read by windows of L tokens starting every
S tokens: [0, L), [S, S + L), ... up to the document's end. Each token is scored once, by the
first window that reaches it, from all the tokens of that window before it: the first window
scores its tokens 1..L-1, every later window only its last tokens not scored yet (S of them,
with at least L - S tokens of context). The first token of a document is never scored.

    PPL(L) = exp( sum of -log p(token | window context) over scored tokens / number of scored tokens )

pooled over all documents (token-weighted, not a mean of per-document perplexities).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from dprope.config import ConfigError
from dprope.eval.common import BenchmarkResult, EvalContext, check_length, markdown_table


@dataclass
class PerplexityConfig:
    lengths: list[int] = field(default_factory=lambda: [2048, 4096, 8192, 16384])  # window sizes L (tokens)
    stride: int = 256  # S: tokens between window starts; each later window scores its last S tokens
    split: str = "test"  # split of the `data` preset to read (local files: a split of data.paths)
    max_documents: int | None = 10  # documents used (after the length filter); null = all
    min_document_tokens: int | None = None  # skip shorter documents; null = max(lengths)
    max_document_tokens: int | None = None  # cut documents to this many tokens; null = whole documents

    def __post_init__(self) -> None:
        if not self.lengths or any(n < 2 for n in self.lengths):
            raise ConfigError("lengths", f"must be a non-empty list of lengths >= 2 (got {self.lengths})")
        if not 1 <= self.stride <= min(self.lengths) - 1:
            raise ConfigError(
                "stride",
                f"must be in [1, min(lengths) - 1] = [1, {min(self.lengths) - 1}] (got {self.stride})",
            )
        if self.max_documents is not None and self.max_documents < 1:
            raise ConfigError("max_documents", f"must be >= 1 or null (got {self.max_documents})")

    @property
    def min_tokens(self) -> int:
        return max(self.lengths) if self.min_document_tokens is None else self.min_document_tokens


@dataclass(frozen=True)
class Window:
    begin: int  # first token fed to the model
    end: int  # one past the last token fed
    score_from: int  # first token scored; tokens [score_from, end) are scored

    @property
    def size(self) -> int:
        return self.end - self.begin

    @property
    def scored(self) -> int:
        return self.end - self.score_from


def plan_windows(num_tokens: int, window: int, stride: int) -> list[Window]:
    """The windows of the definition above; their scored spans partition [1, num_tokens)."""
    windows, scored_until = [], 1
    for begin in range(0, max(num_tokens - 1, 1), stride):
        end = min(begin + window, num_tokens)
        if end > scored_until:
            windows.append(Window(begin, end, scored_until))
            scored_until = end
        if end == num_tokens:
            break
    return windows


@torch.inference_mode()
def window_nll(model, ids: Sequence[int], windows: Sequence[Window]) -> float:
    """Summed negative log-likelihood of the scored tokens of same-shaped ``windows`` (one batch)."""
    device = next(model.parameters()).device
    rows = [list(ids[w.begin : w.end]) for w in windows]
    batch = torch.tensor(rows, dtype=torch.long, device=device)  # (B, L)
    keep = windows[0].scored + 1  # logits from the position before the first scored token
    try:  # only the logits needed: (B, keep, V) instead of (B, L, V)
        logits = model(input_ids=batch, logits_to_keep=keep, use_cache=False).logits
    except TypeError:  # a model class without logits_to_keep
        logits = model(input_ids=batch, use_cache=False).logits
    logits = logits[:, -keep:-1].float()  # (B, scored, V)
    targets = batch[:, -windows[0].scored :]  # (B, scored)
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1))
    return -logprobs.sum().item()


def document_nll(
    model, ids: Sequence[int], window: int, stride: int, batch_size: int = 1
) -> tuple[float, int]:
    """(summed NLL, scored tokens) of one document; windows of equal shape share a forward pass."""
    plan = plan_windows(len(ids), window, stride)
    total, count, start = 0.0, 0, 0
    while start < len(plan):
        shape = (plan[start].size, plan[start].scored)
        stop = start + 1
        while (
            stop < len(plan) and stop - start < batch_size and (plan[stop].size, plan[stop].scored) == shape
        ):
            stop += 1
        total += window_nll(model, ids, plan[start:stop])
        count += sum(w.scored for w in plan[start:stop])
        start = stop
    return total, count


@dataclass
class PerplexityScore:
    length: int
    perplexity: float
    nll: float  # summed over scored tokens
    tokens: int  # scored tokens
    documents: int


def perplexity(
    model,
    documents: Iterable[Sequence[int]],
    window: int,
    stride: int,
    batch_size: int = 1,
    progress: bool = False,
) -> PerplexityScore:
    """Token-weighted sliding-window perplexity of ``documents`` (token-id lists) at ``window``."""
    docs = list(documents)
    total, count = 0.0, 0
    for ids in tqdm(docs, desc=f"perplexity@{window}", disable=not progress, leave=False):
        nll, scored = document_nll(model, ids, window, stride, batch_size)
        total, count = total + nll, count + scored
    if count == 0:
        raise ConfigError("eval.perplexity", "no token to score (documents shorter than 2 tokens?)")
    return PerplexityScore(window, math.exp(total / count), total, count, len(docs))


def select_documents(documents: Iterable[Sequence[int]], cfg: PerplexityConfig) -> list[list[int]]:
    """Documents long enough for every length, cut to max_document_tokens, at most max_documents."""
    selected = []
    for ids in documents:
        if len(ids) < cfg.min_tokens:
            continue
        selected.append(list(ids[: cfg.max_document_tokens] if cfg.max_document_tokens else ids))
        if cfg.max_documents is not None and len(selected) >= cfg.max_documents:
            break
    if not selected:
        raise ConfigError(
            "eval.perplexity.min_document_tokens", f"no document has at least {cfg.min_tokens} tokens"
        )
    return selected


def prepare_perplexity(
    cfg: PerplexityConfig, documents: Iterable[Sequence[int]], ctx: EvalContext
) -> list[list[int]]:
    for length in cfg.lengths:
        check_length("eval.perplexity.lengths", length, ctx)
    return select_documents(documents, cfg)


def run_perplexity(
    model, cfg: PerplexityConfig, documents: list[list[int]], ctx: EvalContext
) -> BenchmarkResult:
    scores = [
        perplexity(model, documents, length, cfg.stride, ctx.batch_size, ctx.progress)
        for length in cfg.lengths
    ]
    summary = {str(s.length): s.perplexity for s in scores}
    markdown = f"Sliding-window perplexity (stride {cfg.stride}), token-weighted over {len(documents)} documents:\n\n"
    markdown += markdown_table(
        ["length", "perplexity", "scored tokens", "documents"],
        [[s.length, s.perplexity, s.tokens, s.documents] for s in scores],
        3,
    )
    details = {
        "stride": cfg.stride,
        "by_length": {
            str(s.length): {"perplexity": s.perplexity, "nll": s.nll, "tokens": s.tokens} for s in scores
        },
        "documents": len(documents),
        "document_tokens": [len(d) for d in documents],
    }
    return BenchmarkResult("perplexity", summary, details, [], markdown)
