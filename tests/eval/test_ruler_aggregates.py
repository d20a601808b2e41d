"""RULER's aggregates over lengths: effective length and the weighted averages, checked against
rows of RULER's README (its per-length means in, its published effective length and wAvg out),
and on stubbed per-task scores through the scorer."""

from __future__ import annotations

import pytest

from dprope.eval.benchmarks.ruler.aggregates import (
    effective_length,
    effective_length_label,
    ruler_aggregates,
    weighted_average,
)
from dprope.eval.benchmarks.ruler.config import RulerConfig
from dprope.eval.benchmarks.ruler.data import RulerData, RulerSample
from dprope.eval.benchmarks.ruler.scoring import score_ruler

LENGTHS = [4096, 8192, 16384, 32768, 65536, 131072]

# RULER's README (NVIDIA/RULER c3f5e3b): per-length means 4K..128K, effective length, wAvg (inc), wAvg (dec)
README_ROWS = {
    "Llama3.1 (70B)": ([96.5, 95.8, 95.4, 94.8, 88.4, 66.6], "65536", 85.5, 93.7),
    "Mistral-Large-2411": ([96.4, 96.3, 95.3, 94.0, 85.9, 48.1], "65536", 79.5, 92.5),
    "Qwen2 (72B)": ([96.9, 96.1, 94.9, 94.1, 79.8, 53.7], "32768", 79.6, 92.3),
    "InternLM2.5 (7B)": ([88.1, 85.5, 84.5, 82.7, 75.5, 68.9], "4096", 77.8, 83.9),
    "LWM (7B)": ([82.3, 78.4, 73.7, 69.1, 68.1, 65.0], "<4096", 69.9, 75.7),
    "Jamba-1.5-large": ([96.7, 96.6, 96.4, 96.0, 95.4, 95.1], ">131072", 95.7, 96.3),
    "DBRX": ([95.1, 93.8, 83.6, 63.1, 2.4, 0.0], "8192", 38.0, 74.7),
}


@pytest.mark.parametrize("model", list(README_ROWS))
def test_readme_rows_are_reproduced(model):
    means, label, inc, dec = README_ROWS[model]
    result = ruler_aggregates(dict(zip(LENGTHS, means, strict=True)))
    assert result["effective_length_label"] == label
    # the README rounds to one decimal from unrounded per-length means: within 0.07
    assert result["wavg_inc"] == pytest.approx(inc, abs=0.07)
    assert result["wavg_dec"] == pytest.approx(dec, abs=0.07)


def test_weights_by_hand_and_order_of_the_mapping():
    means = {16384: 40.0, 4096: 100.0, 8192: 70.0}  # unordered: the lengths decide the weights
    assert weighted_average(means, increasing=True) == pytest.approx((100 + 2 * 70 + 3 * 40) / 6)
    assert weighted_average(means, increasing=False) == pytest.approx((3 * 100 + 2 * 70 + 40) / 6)
    assert weighted_average({4096: 55.0}, increasing=True) == 55.0


def test_effective_length_stops_at_the_first_failure_and_needs_strictly_above():
    assert effective_length({4096: 90.0, 8192: 80.0, 16384: 95.0}) == 4096  # a later pass does not count
    assert effective_length({4096: 85.6, 8192: 99.0}) == 0  # equal to the threshold is not above it
    assert effective_length_label({4096: 85.6, 8192: 99.0}) == "<4096"
    assert effective_length({4096: 60.0, 8192: 50.0}, threshold=55.0) == 4096


def _stub(scores: dict[str, dict[int, float]]) -> tuple[RulerData, list[str]]:
    """Samples and predictions whose per-task scores are the given percentages (tenths): each cell
    has 10 samples with one answer each, and score/10 of them are answered."""
    samples, predictions = [], []
    for task, cells in scores.items():
        for length, score in cells.items():
            for i in range(10):
                samples.append(RulerSample(task, length, [0] * 5, [f"key{i}"]))
                predictions.append(f"key{i}" if i < round(score / 10) else "nothing")
    return RulerData(samples, list(scores), {}), predictions


def test_scorer_reports_the_aggregates_of_stubbed_task_scores():
    """Two tasks at three lengths: means 95, 85, 90 (85 fails the threshold, so 90 after it does
    not count): effective length 4096, wAvg inc (95 + 170 + 270) / 6, dec (285 + 170 + 90) / 6."""
    scores = {
        "niah_single_1": {4096: 100.0, 8192: 90.0, 16384: 100.0},
        "vt": {4096: 90.0, 8192: 80.0, 16384: 80.0},
    }
    data, predictions = _stub(scores)
    cfg = RulerConfig(tasks=list(scores), lengths=[4096, 8192, 16384], num_samples=10)
    result = score_ruler(cfg, data, predictions)
    assert result.summary == pytest.approx({"4096": 95.0, "8192": 85.0, "16384": 90.0, "avg": 90.0})
    aggregates = result.details["aggregates"]
    assert aggregates["effective_length"] == 4096 and aggregates["effective_length_label"] == "4096"
    assert aggregates["wavg_inc"] == pytest.approx(535 / 6)
    assert aggregates["wavg_dec"] == pytest.approx(545 / 6)
    assert "Effective length (mean above 85.6): 4096; wAvg (inc) 89.17, wAvg (dec) 90.83" in result.markdown
    lower = score_ruler(
        RulerConfig(tasks=list(scores), lengths=[4096, 8192, 16384], threshold=80.0), data, predictions
    )
    assert lower.details["aggregates"]["effective_length_label"] == ">16384"


def test_threshold_is_a_score():
    from dprope.config import ConfigError

    with pytest.raises(ConfigError, match=r"^threshold: must be a score in \[0, 100\]"):
        RulerConfig(threshold=120.0)
