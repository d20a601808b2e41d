"""LongBench-E (Bai et al., 2023): the 13 English tasks, scored by input length.

Protocol of the official ``pred.py`` / ``eval.py`` (THUDM/LongBench): the prompt is the dataset's
template filled with ``context`` and ``input``; a prompt longer than the budget is truncated in
the middle (its first and last halves kept, here on token ids so the budget is exact); greedy
decoding for the dataset's generation length; few-shot tasks keep the answer's first line; a
sample scores the best over its references; a dataset's score per bucket (by the sample's
``length`` field, see `length_bucket`) is the mean x 100. The summary row averages each bucket
over the datasets that have samples in it; ``avg`` is the mean of the bucket columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dprope.config import ConfigError, first_line
from dprope.eval.common import BenchmarkResult, EvalContext, check_length, markdown_table, mean
from dprope.eval.generation import greedy_generate
from dprope.eval.longbench_metrics import score_sample
from dprope.eval.longbench_tasks import BUCKETS, TASKS, LongBenchTask, length_bucket

HUB_DATASET = "THUDM/LongBench"


@dataclass
class LongBenchConfig:
    datasets: list[str] = field(default_factory=lambda: list(TASKS))  # LongBench-E datasets (all 13)
    data_dir: str | None = None  # directory of <dataset>.jsonl (the official data.zip); null = the hub
    max_length: int | None = None  # prompt tokens kept; null = max_position_embeddings - generation length
    max_new_tokens: int | None = None  # override every dataset's official generation length (quick runs only)
    max_samples: int | None = None  # first N samples per dataset (quick runs only); null = all

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("datasets", "must list at least one dataset")
        for i, name in enumerate(self.datasets):
            if name not in TASKS:
                raise ConfigError(
                    f"datasets[{i}]", f"unknown LongBench-E dataset {name!r} (known: {', '.join(TASKS)})"
                )
        for name in ("max_length", "max_new_tokens", "max_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, f"must be >= 1 or null (got {value})")


@dataclass
class LongBenchSample:
    dataset: str
    input_ids: list[int]
    answers: list[str]
    all_classes: list[str] | None
    length: int
    id: str


REQUIRED_FIELDS = {"input": str, "context": str, "answers": list, "length": int}


def validate_record(record: Any, where: str) -> dict[str, Any]:
    """One LongBench line: ``input``, ``context``, ``answers`` (list), ``length`` (int),
    ``all_classes`` (list or null) and ``_id``; anything else is refused with its location."""
    field_name = "eval.longbench_e.data_dir"
    if not isinstance(record, Mapping):
        raise ConfigError(field_name, f"{where}: expected a JSON object")
    for key, kind in REQUIRED_FIELDS.items():
        if key not in record:
            raise ConfigError(field_name, f"{where}: missing field {key!r}")
        if not isinstance(record[key], kind) or (kind is int and isinstance(record[key], bool)):
            raise ConfigError(field_name, f"{where}: field {key!r} must be a {kind.__name__}")
    if record.get("all_classes") is not None and not isinstance(record["all_classes"], list):
        raise ConfigError(field_name, f"{where}: field 'all_classes' must be a list or null")
    return dict(record)


def read_local(data_dir: str, dataset: str) -> list[dict[str, Any]]:
    path = Path(data_dir).expanduser() / f"{dataset}.jsonl"
    if not path.is_file():
        raise ConfigError("eval.longbench_e.data_dir", f"no {dataset}.jsonl in {data_dir}")
    records = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(
                    "eval.longbench_e.data_dir", f"{path}:{lineno}: not valid JSON ({err.msg})"
                ) from None
            records.append(validate_record(record, f"{path}:{lineno}"))
    return records


def read_hub(dataset: str) -> list[dict[str, Any]]:
    """The official test split from the hub (``datasets.load_dataset(HUB_DATASET, dataset)``)."""
    try:
        from datasets import load_dataset

        rows = load_dataset(HUB_DATASET, dataset, split="test")
    except Exception as err:  # the hub raises many kinds; all mean "not available here"
        first = first_line(err)
        raise ConfigError(
            "eval.longbench_e.data_dir",
            f"cannot load {HUB_DATASET}/{dataset} from the hub ({first}); unzip the official data.zip and set this",
        ) from None
    return [validate_record(row, f"{HUB_DATASET}/{dataset}[{i}]") for i, row in enumerate(rows)]


def middle_truncate(ids: list[int], budget: int) -> list[int]:
    """Keep the first budget//2 and the last budget - budget//2 tokens (official pred.py)."""
    if len(ids) <= budget:
        return ids
    head = budget // 2
    return ids[:head] + ids[len(ids) - (budget - head) :]


def new_tokens(cfg: LongBenchConfig, task: LongBenchTask) -> int:
    return cfg.max_new_tokens or task.max_new_tokens


def prompt_budget(cfg: LongBenchConfig, task: LongBenchTask, ctx: EvalContext) -> int:
    return cfg.max_length or ctx.max_positions - new_tokens(cfg, task)


def build_samples(
    records: Iterable[Mapping[str, Any]], task: LongBenchTask, tokenizer, budget: int
) -> list[LongBenchSample]:
    samples = []
    for i, record in enumerate(records):
        prompt = task.prompt.format(context=record["context"], input=record["input"])
        ids = middle_truncate(list(tokenizer(prompt, add_special_tokens=True)["input_ids"]), budget)
        samples.append(
            LongBenchSample(
                task.name,
                ids,
                [str(a) for a in record["answers"]],
                record.get("all_classes"),
                record["length"],
                str(record.get("_id", i)),
            )
        )
    return samples


def prepare_longbench(cfg: LongBenchConfig, tokenizer, ctx: EvalContext) -> dict[str, list[LongBenchSample]]:
    """Read, validate and tokenize every dataset before the model is loaded."""
    if cfg.max_length is not None:
        check_length("eval.longbench_e.max_length", cfg.max_length, ctx)
    prepared = {}
    for name in cfg.datasets:
        task = TASKS[name]
        budget = prompt_budget(cfg, task, ctx)
        if budget < 1:
            raise ConfigError("eval.longbench_e.max_new_tokens", f"leaves no room for the prompt of {name}")
        records = read_local(cfg.data_dir, name) if cfg.data_dir else read_hub(name)
        prepared[name] = build_samples(records[: cfg.max_samples], task, tokenizer, budget)
    return prepared


def postprocess(task: LongBenchTask, prediction: str) -> str:
    return prediction.lstrip("\n").split("\n")[0] if task.first_line_only else prediction


def bucket_scores(scored: Iterable[tuple[int, float]]) -> dict[str, float]:
    """Mean score x 100 per length bucket (NaN for an empty bucket) and ``avg`` over the
    non-empty buckets, from (length, score in [0, 1]) pairs."""
    by_bucket: dict[str, list[float]] = {b: [] for b in BUCKETS}
    for length, score in scored:
        by_bucket[length_bucket(length)].append(score)
    row = {b: 100.0 * mean(v) if v else float("nan") for b, v in by_bucket.items()}
    row["avg"] = mean([v for v in row.values() if v == v])
    return row


def summarize(per_dataset: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The paper's row: each bucket averaged over datasets, and the mean of those."""
    row = {}
    for bucket in BUCKETS:
        values = [scores[bucket] for scores in per_dataset.values() if scores[bucket] == scores[bucket]]
        row[bucket] = mean(values) if values else float("nan")
    row["avg"] = mean([v for v in row.values() if v == v])
    return row


def run_longbench(
    model, tokenizer, cfg: LongBenchConfig, prepared: Mapping[str, list[LongBenchSample]], ctx: EvalContext
) -> BenchmarkResult:
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1:]
    per_dataset, records = {}, []
    for name, samples in prepared.items():
        task = TASKS[name]
        predictions = greedy_generate(
            model,
            tokenizer,
            [s.input_ids for s in samples],
            new_tokens(cfg, task),
            batch_size=ctx.batch_size,
            stop_token_ids=newline if task.stop_at_newline else (),
            min_new_tokens=1 if task.stop_at_newline else 0,
            desc=name,
            progress=ctx.progress,
        )
        scored = []
        for sample, raw in zip(samples, predictions, strict=True):
            score = score_sample(task.metric, postprocess(task, raw), sample.answers, sample.all_classes)
            scored.append((sample.length, score))
            records.append(
                {
                    "dataset": name,
                    "_id": sample.id,
                    "length": sample.length,
                    "bucket": length_bucket(sample.length),
                    "prompt_tokens": len(sample.input_ids),
                    "prediction": raw,
                    "answers": sample.answers,
                    "score": score,
                }
            )
        per_dataset[name] = {**bucket_scores(scored), "samples": len(samples)}
    summary = summarize(per_dataset)
    header = ["dataset", "metric", *BUCKETS, "avg", "samples"]
    rows = [
        [n, TASKS[n].metric, *(s[c] for c in (*BUCKETS, "avg")), s["samples"]] for n, s in per_dataset.items()
    ]
    rows.append(["**LongBench-E**", "", *summary.values(), sum(s["samples"] for s in per_dataset.values())])
    markdown = "Scores (x100) by input length (the dataset's `length` field):\n\n" + markdown_table(
        header, rows
    )
    return BenchmarkResult("longbench_e", summary, {"datasets": per_dataset}, records, markdown)
