"""What stages c and d measure on one model: perplexity at L, 2L, s x L and the loss by position.

Perplexity is the evaluation suite's sliding-window computation
(`dprope.eval.benchmarks.perplexity.windows`) in another convention than the suite's defaults:
token-weighted (``aggregate=token``), windows of L document tokens with the BOS only at the
document's start (``bos_every_window=false``) and the stride of the reproduction
(``reproduce.measure.stride``, L / 2 by default). On the same documents a number here equals
what ``launch/eval.py eval=perplexity eval.perplexity.aggregate=token
eval.perplexity.bos_every_window=false eval.perplexity.stride=<S>`` reports; with the suite's
defaults (mean over windows, a BOS before every window, stride 256 or half the shortest length)
it differs. The loss by position is the
mean negative log-likelihood of the token at position m (m = 1 .. s x L - 1) given the m tokens
before it, over the first s x L tokens of every document: the curve of the paper's long-context
figures, where extrapolation shows as a rise past the pre-training length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dprope.eval.benchmarks.perplexity.windows import perplexity


@torch.inference_mode()
def loss_by_position(
    model, documents: Sequence[Sequence[int]], length: int, batch_size: int = 8
) -> list[float]:
    """Mean NLL at positions 1 .. length-1 (index m-1 holds position m) over each document's
    first ``length`` tokens; every document must have at least ``length`` tokens."""
    device = next(model.parameters()).device
    total = torch.zeros(length - 1, dtype=torch.float64)
    rows = [list(doc[:length]) for doc in documents]
    if not rows or any(len(r) < length for r in rows):
        raise ValueError(f"every document needs at least {length} tokens")
    for start in range(0, len(rows), batch_size):
        batch = torch.tensor(rows[start : start + batch_size], dtype=torch.long, device=device)  # (B, N)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()  # (B, N-1, V)
        nll = -torch.log_softmax(logits, dim=-1).gather(-1, batch[:, 1:].unsqueeze(-1)).squeeze(-1)
        total += nll.double().sum(0).cpu()
    return (total / len(rows)).tolist()


def measure(
    model,
    documents: Sequence[Sequence[int]],
    lengths: Sequence[int],
    stride: int,
    pretrain_length: int,
    batch_size: int = 8,
) -> dict:
    """Perplexity at each of ``lengths`` and the loss by position up to ``max(lengths)``.

    ``mean_loss`` splits the curve at the pre-training length L: ``within_L`` averages positions
    1 .. L-1, ``beyond_L`` positions L .. max(lengths)-1 (the positions never seen in pre-training).
    """
    scores = {
        str(n): perplexity(model, documents, n, stride, batch_size, bos=None, aggregate="token")
        for n in lengths
    }
    curve = loss_by_position(model, documents, max(lengths), batch_size)
    within, beyond = curve[: pretrain_length - 1], curve[pretrain_length - 1 :]
    return {
        "perplexity": {n: s.perplexity for n, s in scores.items()},
        "scored_tokens": {n: s.tokens for n, s in scores.items()},
        "documents": len(documents),
        "stride": stride,
        "loss_by_position": curve,
        "mean_loss": {
            "within_L": sum(within) / len(within),
            "beyond_L": sum(beyond) / len(beyond) if beyond else float("nan"),
        },
    }
