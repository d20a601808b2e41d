"""Paired t-intervals against a hand computation, and the verdict each interval allows."""

from __future__ import annotations

import random

import pytest

from dprope.reproduce.statistics import (
    BETTER,
    IDENTICAL,
    SINGLE,
    TIED,
    WORSE,
    PairedInterval,
    format_interval,
    paired_interval,
    verdict,
)


def test_t_interval_of_paired_differences_by_hand():
    # differences 1, 2, 3, 4: mean 2.5, sd sqrt(5/3) = 1.29099, se 0.645497;
    # t(0.975, 3) = 3.18245 (a printed t table), half-width 2.05425
    interval = paired_interval([11.0, 12.0, 13.0, 14.0], [10.0, 10.0, 10.0, 10.0])
    assert interval.differences == [1.0, 2.0, 3.0, 4.0]
    assert interval.mean == pytest.approx(2.5)
    assert interval.low == pytest.approx(0.44575, abs=1e-4)
    assert interval.high == pytest.approx(4.55425, abs=1e-4)
    # 90%: t(0.95, 3) = 2.35336
    narrow = paired_interval([11.0, 12.0, 13.0, 14.0], [10.0] * 4, confidence=0.90)
    assert narrow.high - narrow.mean == pytest.approx(2.35336 * 0.645497, abs=1e-4)


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_t_interval_and_verdict_agree_with_scipys_paired_t_test(n):
    """scipy's paired t-test (``ttest_rel``: its own interval and p-value, not the quantile the
    implementation calls) on random pairs: the same bounds, and 'better'/'worse' exactly when the
    two-sided p-value is below 0.05."""
    from scipy.stats import ttest_rel

    rng = random.Random(n)
    for trial in range(40):
        shift = rng.choice([-1.0, 0.0, 1.0]) * rng.random()
        a = [rng.gauss(5.0, 1.0) for _ in range(n)]
        b = [x - shift + rng.gauss(0.0, 0.5) for x in a]
        interval = paired_interval(a, b)
        test = ttest_rel(a, b)
        reference = test.confidence_interval(0.95)
        assert interval.low == pytest.approx(reference.low, rel=1e-9, abs=1e-12), trial
        assert interval.high == pytest.approx(reference.high, rel=1e-9, abs=1e-12), trial
        word = verdict(interval, lower_is_better=True)
        if test.pvalue < 0.05:
            assert word == (BETTER if interval.mean < 0 else WORSE), trial
        else:
            assert word == TIED, trial


def test_pairs_stay_paired_and_non_finite_pairs_are_dropped():
    interval = paired_interval([1.0, float("inf"), 3.0], [0.0, 1.0, 1.0])
    assert interval.differences == [1.0, 2.0]
    with pytest.raises(ValueError, match="pairs"):
        paired_interval([1.0], [1.0, 2.0])
    assert paired_interval([], []) is None
    single = paired_interval([2.0], [1.0])
    assert single.mean == 1.0 and single.low is None and verdict(single, True) == SINGLE


@pytest.mark.parametrize(
    ("low", "high", "lower_is_better", "expected"),
    [
        (-0.3, -0.1, True, BETTER),  # perplexity lower on every plausible mean
        (-0.3, -0.1, False, WORSE),  # accuracy lower
        (0.1, 0.3, True, WORSE),
        (0.1, 0.3, False, BETTER),
        (-0.1, 0.2, True, TIED),
        (-0.1, 0.2, False, TIED),
        (0.0, 0.2, True, TIED),  # touching 0 is not excluding it
    ],
)
def test_verdict_follows_the_interval(low, high, lower_is_better, expected):
    interval = PairedInterval([low, high], (low + high) / 2, low, high)
    assert verdict(interval, lower_is_better) == expected


def test_identical_results_are_named_as_such():
    interval = paired_interval([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert (interval.low, interval.high) == (0.0, 0.0)
    assert verdict(interval, False) == IDENTICAL


def test_format_interval():
    interval = PairedInterval([1.0, 2.0], -0.02, -0.1, 0.06)
    assert format_interval(interval) == "-0.02 [-0.10, +0.06]"
    assert format_interval(interval, 0, scale=100) == "-2 [-10, +6]"
    assert format_interval(None) == "-"
