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
from collections.abc import Callable, Iterable, Sequence
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


def document_plan(num_tokens: int, window: int, stride: int, bos: int | None) -> list[Window]:
    """The windows of a document of ``num_tokens`` tokens at ``window`` (BOS included when ``bos``)."""
    prefix = 0 if bos is None else 1
    return plan_windows(num_tokens, window - prefix, stride, 0 if prefix else 1)


def document_windows(
    model,
    ids: Sequence[int],
    window: int,
    stride: int,
    batch_size: int = 1,
    bos: int | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> list[tuple[float, int]]:
    """(summed NLL, scored tokens) of each window of one document; with ``bos``, every window is
    BOS + ``window - 1`` document tokens. Windows of equal shape share a forward pass, at most
    ``batch_size`` of them; ``on_batch(n)`` is called after each pass of ``n`` windows."""
    prefix = () if bos is None else (bos,)
    plan = document_plan(len(ids), window, stride, bos)
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
        if on_batch is not None:
            on_batch(stop - start)
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


def count_windows(
    documents: Iterable[Sequence[int]], window: int, stride: int, bos: int | None, truncate: bool = False
) -> int:
    """How many windows `perplexity` runs at ``window`` (for a progress bar's total)."""
    if truncate:
        return sum(1 for ids in documents if len(ids) > (bos is None))
    return sum(len(document_plan(len(ids), window, stride, bos)) for ids in documents)


def perplexity(
    model,
    documents: Iterable[Sequence[int]],
    window: int,
    stride: int,
    batch_size: int = 1,
    progress: bool | tqdm = False,
    *,
    bos: int | None,
    aggregate: str = "window",
    truncate: bool = False,
) -> PerplexityScore:
    """Perplexity of ``documents`` (token-id lists) at ``window``; see the module docstring.

    ``bos`` (the id put before every window, or None for windows of document tokens only) has no
    default: the config's default puts the tokenizer's BOS there, which only the caller knows.
    ``aggregate`` and ``truncate`` default to the config's ``aggregate=window`` and ``mode=sliding``.
    ``progress``: a bar over the tokens this length's windows feed the model, or a tqdm bar to
    advance by them (one bar over several lengths, with their total: a window of L tokens costs
    about L, so the estimate holds across lengths).
    """
    docs = list(documents)
    windows: list[tuple[float, int]] = []
    bar = progress if isinstance(progress, tqdm) else None
    if bar is None:
        total = window * count_windows(docs, window, stride, bos, truncate)
        bar = tqdm(
            total=total,
            desc=f"perplexity@{window}",
            unit="tok",
            unit_scale=True,
            disable=not progress,
            leave=False,
        )

    def advance(count: int) -> None:
        bar.update(count * window)

    for ids in docs:
        if truncate:  # one window: the document cut to fit
            ids = ids[: window - (bos is not None)]
            windows += document_windows(model, ids, window, max(len(ids), 1), batch_size, bos, advance)
        else:
            windows += document_windows(model, ids, window, stride, batch_size, bos, advance)
    if bar is not progress:
        bar.close()
    total, count = sum(n for n, _ in windows), sum(c for _, c in windows)
    if count == 0:
        raise ConfigError("eval.perplexity", "no token to score (documents shorter than 2 tokens?)")
    mean_window = sum(n / c for n, c in windows) / len(windows)
    ppl = math.exp(mean_window if aggregate == "window" else total / count)
    return PerplexityScore(window, ppl, total, count, len(docs), len(windows), mean_window)
