"""Paired comparisons of strategies, and the report's opening verdict worded from them.

The paper's central ordering (Tables 1 and 10, perplexity at the extended length, fine-tuned
and training-free): ours (DPRoPE) < YaRN < PI. Each link is a paired comparison over seeds
(`dprope.reproduce.statistics`); the verdict states a link as reproduced only when its 95%
interval excludes 0 on the paper's side, as reversed when it excludes 0 on the other side, and
as not distinguishable at this scale otherwise. Retrieval accuracy (the paper's passkey claim)
is worded the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from dprope.reproduce.results import Measurement, paired_values
from dprope.reproduce.statistics import (
    BETTER,
    WORSE,
    PairedInterval,
    format_interval,
    paired_interval,
    verdict,
)

NAMES = {"dprope": "DPRoPE", "yarn": "YaRN", "pi": "PI", "none": "none", "ntk": "NTK", "llama3": "Llama 3"}
PAIRS = (("dprope", "yarn"), ("dprope", "pi"), ("yarn", "pi"), ("dprope", "none"))  # a - b


def display(name: str) -> str:
    return NAMES.get(name, name)


@dataclass
class Comparison:
    """``a - b`` for one measurement in one setting, paired by seed."""

    setting: str  # "fine-tuned" | "training-free"
    measurement: Measurement
    a: str
    b: str
    mean_a: float
    mean_b: float
    interval: PairedInterval

    @property
    def word(self) -> str:
        return verdict(self.interval, self.measurement.lower_is_better)

    def difference(self) -> str:
        m = self.measurement
        unit = " points" if m.scale == 100 else ""
        return f"{display(self.a)} − {display(self.b)} = {format_interval(self.interval, m.digits, m.scale)}{unit}"


def compare(
    entries: dict[str, Any], setting: str, measurement: Measurement, a: str, b: str
) -> Comparison | None:
    """The paired comparison of strategies ``a`` and ``b``; None when either is absent or no
    seed finished both."""
    if a not in entries or b not in entries:
        return None
    pairs = [
        (x, y)
        for x, y in zip(*paired_values(entries[a], entries[b], measurement.key), strict=True)
        if math.isfinite(x) and math.isfinite(y)
    ]
    if not pairs:
        return None
    values_a, values_b = [x for x, _ in pairs], [y for _, y in pairs]
    interval = paired_interval(values_a, values_b)
    return Comparison(setting, measurement, a, b, fmean(values_a), fmean(values_b), interval)


def _value(comparison: Comparison, which: str) -> str:
    m = comparison.measurement
    number = (comparison.mean_a if which == "a" else comparison.mean_b) * m.scale
    return f"{number:.{m.digits}f}{'%' if m.scale == 100 else ''}"


def _outcome(links: list[Comparison]) -> str:
    """What the intervals say of the paper's links: reproduced, reversed, or not distinguishable."""
    held = [f"{display(c.a)} better than {display(c.b)}" for c in links if c.word == BETTER]
    reversed_ = [f"{display(c.b)} better than {display(c.a)}" for c in links if c.word == WORSE]
    open_ = [f"{display(c.a)} vs {display(c.b)}" for c in links if c.word not in (BETTER, WORSE)]
    if len(links) == 2 and len(held) == 2:
        return "the paper's ordering ours < YaRN < PI is reproduced"
    pieces = []
    if held:
        pieces.append("reproduced: " + ", ".join(held))
    if reversed_:
        pieces.append("reversed: " + ", ".join(reversed_))
    if open_:
        pieces.append("not distinguishable at this scale: " + ", ".join(open_))
    return "; ".join(pieces)


def ordering_sentence(title: str, ours_yarn: Comparison | None, yarn_pi: Comparison | None) -> str:
    """One sentence on the ordering ours < YaRN < PI for one setting and measurement, with the
    means, the paired differences and their intervals."""
    present = [c for c in (ours_yarn, yarn_pi) if c is not None]
    if not present:
        return f"{title}: not measured."
    first = present[0]
    means = [f"{display(first.a)} {_value(first, 'a')}", f"{display(first.b)} {_value(first, 'b')}"]
    if ours_yarn is not None and yarn_pi is not None:
        means.append(f"{display(yarn_pi.b)} {_value(yarn_pi, 'b')}")
    n = first.interval.n
    parts = [f"{c.difference()}: {c.word}" for c in present]
    return (
        f"{title}: {', '.join(means)} (means over {n} seed{'s' if n != 1 else ''}); "
        f"{'; '.join(parts)}. So {_outcome(present)}."
    )


def claim_sentence(title: str, comparisons: list[Comparison | None]) -> str:
    """One sentence on 'ours is better than each baseline' for one measurement."""
    present = [c for c in comparisons if c is not None]
    if not present:
        return f"{title}: not measured."
    first = present[0]
    means = [f"{display(first.a)} {_value(first, 'a')}"] + [
        f"{display(c.b)} {_value(c, 'b')}" for c in present
    ]
    parts = [f"{c.difference()}: {c.word}" for c in present]
    return f"{title}: {', '.join(means)}; {'; '.join(parts)}."


LEARNED_FACTOR = 10  # retrieval within L counts as learned at 10 x the chance accuracy or more


def learned(accuracies: list[float], chance: float) -> bool:
    """Whether the mean accuracy within L reaches ``LEARNED_FACTOR`` x the chance accuracy."""
    return bool(accuracies) and fmean(accuracies) >= LEARNED_FACTOR * chance


def learned_sentence(accuracies: list[float], length: int, chance: float) -> str:
    """Whether the pre-trained model retrieves the key within L at all: its exact-match accuracy
    at L (mean over seeds) against ``LEARNED_FACTOR`` x the chance accuracy."""
    if not accuracies:
        return f"Retrieval within L = {length}: not measured."
    mean = fmean(accuracies)
    return (
        f"Retrieval within L = {length}: the pre-trained model finds the key in {100 * mean:.1f}% of the "
        f"prompts (mean over {len(accuracies)} seed{'s' if len(accuracies) != 1 else ''}; chance "
        f"{100 * chance:.1f}%), so the task was "
        + (
            "learned."
            if learned(accuracies, chance)
            else f"not learned at this budget (below {LEARNED_FACTOR} x chance), and retrieval "
            "comparisons say nothing of long-range use."
        )
    )


def range_sentence(title: str, means: dict[str, float]) -> str:
    """Where retrieval was not learned: the range of the means instead of every comparison
    (``means``: a label per strategy and setting -> its mean accuracy over seeds)."""
    if not means:
        return f"{title}: not measured."
    low, high = min(means, key=means.__getitem__), max(means, key=means.__getitem__)
    return (
        f"{title}: every strategy between {100 * means[low]:.1f}% ({low}) and "
        f"{100 * means[high]:.1f}% ({high}), means over seeds; the paired intervals are in the tables."
    )


def verdict_paragraph(
    tuned_ppl: tuple[Comparison | None, Comparison | None],
    free_ppl: tuple[Comparison | None, Comparison | None],
    retrieval: list[tuple[str, list[Comparison | None]]],
    target: int,
    learned: str | None = None,
) -> str:
    """The report's opening paragraph: the paper's ordering at s x L fine-tuned (Table 1) and
    training-free (Table 10), then whether retrieval was learned within L (``learned``, from
    `learned_sentence`) and retrieval beyond it; every comparison follows from a 95% t-interval
    of paired per-seed differences."""
    sentences = [
        ordering_sentence(f"Fine-tuned perplexity at s x L = {target} (the paper's Table 1)", *tuned_ppl),
        ordering_sentence(f"Training-free perplexity at {target} (the paper's Table 10)", *free_ppl),
        *([learned] if learned else []),
        *[claim_sentence(title, comparisons) for title, comparisons in retrieval],
    ]
    return (
        "**Verdict.** "
        + " ".join(sentences)
        + " Intervals: 95% Student t over the per-seed differences (each seed's strategies share "
        "one pre-trained model); 'not distinguishable at this scale' means the interval contains 0."
    )
