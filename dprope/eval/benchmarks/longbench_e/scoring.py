"""LongBench-E scoring, shared by a normal run and the re-scoring of saved predictions.

A prediction file holds one JSON object per line with ``pred``, ``answers``, ``all_classes`` and
``length``, named after the dataset without its ``_e`` (``gov_report.jsonl``): the format and
names of the official ``pred.py`` (``pred_e/<model>/<dataset>.jsonl``). Scoring follows the
official ``eval.py --e``: few-shot tasks keep the prediction's first line, a sample scores its
best reference, and a dataset's score in a length bucket is ``round(100 x mean, 2)`` (NaN for an
empty bucket). The official ``result.json`` maps each dataset to these three bucket scores.
Each sample is scored with its own ``all_classes``; the official scorer uses the last line's for
the whole file, the same list in every trec line.

Averages, each labelled with how it is taken (NaN buckets are left out of every mean):
- a dataset's ``avg``: the mean of its bucket scores;
- ``macro over datasets``: each bucket averaged over the datasets;
- ``macro over categories``: each bucket averaged over the six task categories, each category
  being the mean of its datasets (the averaging of the official README's tables).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dprope.config import ConfigError
from dprope.eval.benchmarks.longbench_e.metrics import score_sample
from dprope.eval.benchmarks.longbench_e.tasks import (
    BUCKETS,
    CATEGORIES,
    TASKS,
    LongBenchTask,
    length_bucket,
    official_name,
)
from dprope.eval.common import BenchmarkResult, markdown_table, mean
from dprope.inputs import read_text

if TYPE_CHECKING:
    from dprope.eval.benchmarks.longbench_e.config import LongBenchConfig

AVERAGES = {"categories": "macro over categories", "datasets": "macro over datasets"}
PREDICTIONS_FIELD = "eval.longbench_e.predictions_dir"


@dataclass
class Prediction:
    """One sample's generated answer and what scoring needs (an official prediction line)."""

    pred: str  # the generated text, as decoded (the first-line rule applies when scoring)
    answers: list[str]
    all_classes: list[str] | None
    length: int  # the dataset's length field (words), which picks the bucket
    extra: dict[str, Any] = field(default_factory=dict)  # further keys of the line (_id, prompt_tokens)

    def official(self) -> dict[str, Any]:
        """The official line, then our extra keys (the official scorer ignores them)."""
        line = {
            "pred": self.pred,
            "answers": self.answers,
            "all_classes": self.all_classes,
            "length": self.length,
        }
        return {**line, **self.extra}


def postprocess(task: LongBenchTask, prediction: str) -> str:
    return prediction.lstrip("\n").split("\n")[0] if task.first_line_only else prediction


def metric_of(task: LongBenchTask, classification_fix: bool) -> str:
    return "classification_fixed" if task.metric == "classification" and classification_fix else task.metric


def score(task: LongBenchTask, prediction: Prediction, classification_fix: bool = False) -> float:
    """A sample's score in [0, 1]: the best over its references."""
    text = postprocess(task, prediction.pred)
    return score_sample(metric_of(task, classification_fix), text, prediction.answers, prediction.all_classes)


def bucket_scores(scored: Sequence[tuple[int, float]]) -> dict[str, float]:
    """``round(100 x mean, 2)`` per bucket (NaN when empty) from (length, score) pairs, and ``avg``
    = the mean of the non-empty buckets."""
    by_bucket: dict[str, list[float]] = {b: [] for b in BUCKETS}
    for length, value in scored:
        by_bucket[length_bucket(length)].append(value)
    row = {b: round(100.0 * mean(v), 2) if v else float("nan") for b, v in by_bucket.items()}
    row["avg"] = _mean_present(row.values())
    return row


def _mean_present(values) -> float:
    present = [v for v in values if v == v]
    return mean(present) if present else float("nan")


def macro(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each bucket averaged over ``rows`` (NaN left out), and ``avg`` = the mean of those."""
    out = {b: _mean_present([r[b] for r in rows]) for b in BUCKETS}
    out["avg"] = _mean_present(out.values())
    return out


def aggregate(per_dataset: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Per-category rows and both labelled averages from the per-dataset bucket rows."""
    categories = {
        name: macro([per_dataset[d] for d in members if d in per_dataset])
        for name, members in CATEGORIES.items()
        if any(d in per_dataset for d in members)
    }
    return {
        "categories": categories,
        "averages": {
            AVERAGES["datasets"]: macro(list(per_dataset.values())),
            AVERAGES["categories"]: macro(list(categories.values())),
        },
    }


def official_result(per_dataset: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """The official ``result.json`` of ``eval.py --e``: dataset (no ``_e``) -> bucket -> score."""
    return {official_name(d): {b: row[b] for b in BUCKETS} for d, row in per_dataset.items()}


def prediction_file(dataset: str) -> str:
    return f"{official_name(dataset)}.jsonl"


def dump_predictions(predictions: Sequence[Prediction]) -> str:
    return "".join(json.dumps(p.official(), ensure_ascii=False) + "\n" for p in predictions)


def _parse_line(line: str, where: str) -> Prediction:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ConfigError(PREDICTIONS_FIELD, f"{where}: not valid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise ConfigError(PREDICTIONS_FIELD, f"{where}: expected a JSON object")
    for key in ("pred", "answers", "all_classes", "length"):
        if key not in record:
            raise ConfigError(PREDICTIONS_FIELD, f"{where}: missing field {key!r}")
    checks = (
        ("pred", isinstance(record["pred"], str), "a string"),
        ("answers", isinstance(record["answers"], list), "a list"),
        (
            "all_classes",
            record["all_classes"] is None or isinstance(record["all_classes"], list),
            "a list or null",
        ),
        (
            "length",
            isinstance(record["length"], int) and not isinstance(record["length"], bool),
            "an integer",
        ),
    )
    for key, ok, kind in checks:
        if not ok:
            raise ConfigError(PREDICTIONS_FIELD, f"{where}: field {key!r} must be {kind}")
    extra = {k: v for k, v in record.items() if k not in ("pred", "answers", "all_classes", "length")}
    return Prediction(
        record["pred"], [str(a) for a in record["answers"]], record["all_classes"], record["length"], extra
    )


def read_predictions(directory: str, datasets: Sequence[str]) -> dict[str, list[Prediction]]:
    """The official prediction files of ``datasets`` found in ``directory`` (a dataset without a
    file is skipped, as the official scorer scores the files it finds); every line validated."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ConfigError(PREDICTIONS_FIELD, f"no directory at {directory}")
    found: dict[str, list[Prediction]] = {}
    for dataset in datasets:
        path = root / prediction_file(dataset)
        if not path.is_file():
            continue
        lines = read_text(path, PREDICTIONS_FIELD).splitlines()
        rows = [_parse_line(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
        if not rows:
            raise ConfigError(PREDICTIONS_FIELD, f"{path} holds no prediction")
        found[dataset] = rows
    if not found:
        expected = ", ".join(prediction_file(d) for d in datasets[:3])
        raise ConfigError(
            PREDICTIONS_FIELD, f"no LongBench-E prediction file in {directory} (expected {expected}, ...)"
        )
    return found


def score_predictions(cfg: LongBenchConfig, predictions: Mapping[str, list[Prediction]]) -> BenchmarkResult:
    """Scores per dataset x bucket, per category and both averages; the official result.json and
    prediction files go to ``longbench_e/`` (re-scorable with ``predictions_dir`` or the official
    ``eval.py``)."""
    per_dataset, records, files = {}, [], {}
    for name, rows in predictions.items():
        task = TASKS[name]
        scored = []
        for row in rows:
            value = score(task, row, cfg.classification_fix)
            scored.append((row.length, value))
            records.append(
                {
                    "dataset": name,
                    **row.extra,
                    "length": row.length,
                    "bucket": length_bucket(row.length),
                    "prediction": row.pred,
                    "answers": row.answers,
                    "score": value,
                }
            )
        per_dataset[name] = {**bucket_scores(scored), "samples": len(rows)}
        files[f"longbench_e/{prediction_file(name)}"] = dump_predictions(rows)
    groups = aggregate(per_dataset)
    headline = AVERAGES[cfg.average]
    summary = groups["averages"][headline]
    result_json = official_result(per_dataset)
    files["longbench_e/result.json"] = json.dumps(result_json, indent=4, ensure_ascii=False) + "\n"
    details = {
        "datasets": per_dataset,
        "categories": groups["categories"],
        "averages": groups["averages"],
        "summary_is": headline,
        "result_json": result_json,
        "classification": "fixed" if cfg.classification_fix else "official",
        "rescored_from": cfg.predictions_dir,
    }
    return BenchmarkResult(
        "longbench_e", summary, details, records, _markdown(cfg, per_dataset, groups), files
    )


def _markdown(cfg: LongBenchConfig, per_dataset, groups) -> str:
    columns = (*BUCKETS, "avg")
    header = ["dataset", "metric", *columns, "samples"]
    rows = [
        [n, metric_of(TASKS[n], cfg.classification_fix), *(s[c] for c in columns), s["samples"]]
        for n, s in per_dataset.items()
    ]
    for label, row in groups["averages"].items():
        rows.append([f"**{label}**", "", *(row[c] for c in columns), ""])
    text = "Scores (x100) by input length (the dataset's `length` field); avg = mean of the buckets:\n\n"
    text += markdown_table(header, rows)
    text += "\n\nBy category (each the mean of its datasets):\n\n"
    text += markdown_table(
        ["category", *columns], [[c, *(r[k] for k in columns)] for c, r in groups["categories"].items()]
    )
    text += f"\n\nHeadline: {AVERAGES[cfg.average]}."
    return text
