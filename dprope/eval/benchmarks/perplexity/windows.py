"""Perplexity on long documents, in the two conventions the field publishes: the computation.

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
from dataclasses import dataclass

from tqdm.auto import tqdm

from dprope.config import ConfigError


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


def window_nll(
    model, ids: Sequence[int], windows: Sequence[Window], prefix: Sequence[int] = ()
) -> list[float]:
    """Summed negative log-likelihood of the scored tokens of each of the same-shaped ``windows``
    (one batch); ``prefix`` (the BOS) goes before every window."""
    import torch

    with torch.inference_mode():
        return _window_nll(model, ids, windows, prefix)


def _window_nll(model, ids: Sequence[int], windows: Sequence[Window], prefix: Sequence[int]) -> list[float]:
    import torch

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
    bos: int | None,
    aggregate: str = "window",
    truncate: bool = False,
) -> PerplexityScore:
    """Perplexity of ``documents`` (token-id lists) at ``window``; see the module docstring.

    ``bos`` (the id put before every window, or None for windows of document tokens only) has no
    default: the config's default puts the tokenizer's BOS there, which only the caller knows.
    ``aggregate`` and ``truncate`` default to the config's ``aggregate=window`` and ``mode=sliding``.
    """
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
