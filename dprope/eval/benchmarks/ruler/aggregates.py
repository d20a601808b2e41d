"""The numbers RULER's README table reports beside the mean over tasks at each length
(Hsieh et al., 2024, section 5; NVIDIA/RULER README): the effective length and the two weighted
averages over lengths.

- Effective length: the longest tested length up to which the mean over tasks stays above a
  threshold, Llama-2-7B's 85.6 at 4k. Every length up to it must pass (a pass after a failure does
  not extend it). RULER's README writes ">128K" when the longest tested length passes and "<4K"
  when the shortest fails; `effective_length_label` does the same with token counts.
- wAvg (inc) / wAvg (dec): weighted means of the per-length means with weights 1, 2, ..., n over
  the lengths in increasing order (inc), or n, ..., 1 (dec). The README's rows reproduce with these
  weights (e.g. Llama-3.1-70B: 85.5 and 93.7 from 96.5, 95.8, 95.4, 94.8, 88.4, 66.6).
"""

from __future__ import annotations

from collections.abc import Mapping

THRESHOLD = 85.6  # Llama-2-7B (chat) at 4k, RULER's qualitative threshold


def _ordered(means: Mapping[int, float]) -> list[tuple[int, float]]:
    if not means:
        raise ValueError("no per-length means to aggregate")
    return sorted(means.items())


def effective_length(means: Mapping[int, float], threshold: float = THRESHOLD) -> int:
    """The longest length L such that the mean at every tested length <= L is above ``threshold``;
    0 when the shortest tested length already fails."""
    passed = 0
    for length, value in _ordered(means):
        if not value > threshold:
            break
        passed = length
    return passed


def effective_length_label(means: Mapping[int, float], threshold: float = THRESHOLD) -> str:
    """As RULER's README writes it: the length, ``>L`` when the longest tested length L passes,
    ``<L`` when the shortest tested length L fails."""
    lengths = [n for n, _ in _ordered(means)]
    found = effective_length(means, threshold)
    if found == 0:
        return f"<{lengths[0]}"
    return f">{found}" if found == lengths[-1] else str(found)


def weighted_average(means: Mapping[int, float], increasing: bool) -> float:
    """The mean over lengths with weights 1..n in length order (``increasing``) or n..1."""
    values = [v for _, v in _ordered(means)]
    weights = list(range(1, len(values) + 1))
    if not increasing:
        weights.reverse()
    return sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)


def ruler_aggregates(
    means: Mapping[int, float], threshold: float = THRESHOLD
) -> dict[str, float | int | str]:
    """Effective length (and its label), wAvg (inc) and wAvg (dec) of the per-length means."""
    return {
        "threshold": threshold,
        "effective_length": effective_length(means, threshold),
        "effective_length_label": effective_length_label(means, threshold),
        "wavg_inc": weighted_average(means, increasing=True),
        "wavg_dec": weighted_average(means, increasing=False),
    }
