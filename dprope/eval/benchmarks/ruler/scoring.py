"""RULER's scoring: its post-processing of a prediction, string-match-all (NIAH, VT, CWE, FWE)
and string-match-part (QA), x 100 and averaged over the samples of a task and length; the
summary is the mean over the tasks that ran at each length (RULER's headline), ``avg`` the mean
over lengths; the details add RULER's effective length and weighted averages (`aggregates`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from dprope.eval.benchmarks.ruler.aggregates import ruler_aggregates
from dprope.eval.benchmarks.ruler.config import RulerConfig
from dprope.eval.benchmarks.ruler.data import RulerData
from dprope.eval.benchmarks.ruler.tasks import TASKS
from dprope.eval.common import BenchmarkResult, markdown_table, mean

_CONTROL = re.compile(r"[\x00-\x1f]")


def clean_prediction(text: str) -> str:
    """RULER's post-processing: strip, control characters to newlines, strip again."""
    return _CONTROL.sub("\n", text.strip()).strip()


def string_match_all(prediction: str, references: list[str]) -> float:
    """Share of the references found in the prediction, case-insensitive (NIAH, VT, CWE, FWE)."""
    text = prediction.lower()
    return sum(r.lower() in text for r in references) / len(references) if references else 0.0


def string_match_part(prediction: str, references: list[str]) -> float:
    """1 if any reference is found in the prediction, case-insensitive (QA)."""
    text = prediction.lower()
    return float(any(r.lower() in text for r in references))


METRICS = {"all": string_match_all, "part": string_match_part}


def score(task: str, prediction: str, references: list[str]) -> float:
    """One sample's score in [0, 1] under the task's RULER metric."""
    return METRICS[TASKS[task].metric](clean_prediction(prediction), references)


def score_ruler(cfg: RulerConfig, data: RulerData, predictions: Sequence[str]) -> BenchmarkResult:
    """Scores of ``predictions`` (one per sample, in order): per task x length, their mean over
    tasks at each length (RULER's headline), and ``avg`` over lengths."""
    scores: dict[str, dict[str, float]] = {}
    nulls: dict[str, dict[str, str]] = {}
    records = []
    for sample, prediction in zip(data.samples, predictions, strict=True):
        value = score(sample.task, prediction, sample.answers)
        records.append(
            {
                "task": sample.task,
                "length": sample.length,
                "prompt_tokens": len(sample.input_ids),
                "prediction": prediction,
                "answers": sample.answers,
                "score": value,
            }
        )
    columns = [str(n) for n in cfg.lengths]
    for task in data.tasks:
        for length in cfg.lengths:
            cell = [r for r in records if r["task"] == task and r["length"] == length]
            scores.setdefault(task, {})[str(length)] = 100.0 * mean([r["score"] for r in cell])
            empty = sum(not clean_prediction(r["prediction"]) for r in cell)
            nulls.setdefault(task, {})[str(length)] = f"{empty}/{len(cell)}"  # RULER's "Nulls" row
    summary = {c: mean([scores[t][c] for t in data.tasks]) for c in columns}
    summary["avg"] = mean(list(summary.values()))
    aggregates = ruler_aggregates({int(c): summary[c] for c in columns}, cfg.threshold)
    rows = [[t, *(scores[t][c] for c in columns), mean([scores[t][c] for c in columns])] for t in data.tasks]
    rows.append([f"**mean over {len(data.tasks)} tasks**", *summary.values()])
    markdown = "Score x100 (string-match-all; QA: string-match-part) by sequence length (tokens):\n\n"
    markdown += markdown_table(["task", *columns, "avg"], rows)
    markdown += (
        f"\n\nEffective length (mean above {cfg.threshold:g}): {aggregates['effective_length_label']}; "
        f"wAvg (inc) {aggregates['wavg_inc']:.2f}, wAvg (dec) {aggregates['wavg_dec']:.2f} "
        "(weights 1..n and n..1 over the lengths, as RULER's README)."
    )
    if data.skipped:
        markdown += "\n\nSkipped: " + "; ".join(f"{t} ({why})" for t, why in data.skipped.items())
    details = {
        "scores": scores,
        "tasks": data.tasks,
        "nulls": nulls,
        "skipped": data.skipped,
        "samples_per_cell": cfg.num_samples,
        "aggregates": aggregates,
        "average": f"mean over the {len(data.tasks)} tasks that ran, per length; avg = mean over lengths",
    }
    return BenchmarkResult("ruler", summary, details, records, markdown)
