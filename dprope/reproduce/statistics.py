"""Paired comparison of two strategies over seeds, and the words a report may use for it.

Every seed pre-trains one model that all strategies start from, so two strategies are compared
seed by seed: the differences ``a_s - b_s`` remove what the seeds share (the pre-trained model,
the data order). Their mean gets a two-sided Student t-interval: mean ± t(1 - (1 - c)/2, n - 1)
x sd / sqrt(n), sd the sample standard deviation (n - 1), the quantile from `scipy.stats.t`.
The interval assumes the differences are roughly normal; with 5 seeds it is wide, and it says so.

A verdict follows from the interval alone: entirely on the better side of 0, "better"; entirely
on the worse side, "worse"; containing 0, "not distinguishable at this scale".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CONFIDENCE = 0.95
BETTER, WORSE, TIED, IDENTICAL, SINGLE = (
    "better",
    "worse",
    "not distinguishable at this scale",
    "identical on every seed",
    "one seed: no interval",
)


@dataclass
class PairedInterval:
    """The mean of paired differences and its t-interval (None bounds with fewer than 2 pairs)."""

    differences: list[float]
    mean: float
    low: float | None
    high: float | None
    confidence: float = CONFIDENCE

    @property
    def n(self) -> int:
        return len(self.differences)


def paired_interval(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> PairedInterval | None:
    """The t-interval of mean(a - b) over pairs (seeds); None when there is no pair.

    ``a[i]`` and ``b[i]`` must come from the same seed; pairs where either is not finite are
    dropped (a perplexity that overflowed says nothing about a difference).
    """
    from scipy.stats import t

    if len(a) != len(b):
        raise ValueError(f"paired values must come in pairs (got {len(a)} and {len(b)})")
    differences = [x - y for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    if not differences:
        return None
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return PairedInterval(differences, mean, None, None, confidence)
    half = t.ppf(1 - (1 - confidence) / 2, len(differences) - 1) * statistics.stdev(differences)
    half /= math.sqrt(len(differences))
    return PairedInterval(differences, mean, mean - half, mean + half, confidence)


def verdict(interval: PairedInterval, lower_is_better: bool) -> str:
    """What the interval of ``a - b`` says about ``a``: better, worse, or not distinguishable."""
    if interval.low is None or interval.high is None:
        return SINGLE
    if all(d == 0 for d in interval.differences):
        return IDENTICAL
    if interval.high < 0:
        return BETTER if lower_is_better else WORSE
    if interval.low > 0:
        return WORSE if lower_is_better else BETTER
    return TIED


def format_interval(interval: PairedInterval | None, digits: int = 2, scale: float = 1.0) -> str:
    """``-0.02 [-0.10, +0.06]`` (values times ``scale``: 100 for accuracy in points)."""
    if interval is None:
        return "-"
    mean = f"{interval.mean * scale:+.{digits}f}"
    if interval.low is None or interval.high is None:
        return mean
    return f"{mean} [{interval.low * scale:+.{digits}f}, {interval.high * scale:+.{digits}f}]"
