"""LongBench-E (Bai et al., 2023): the 13 English tasks, scored by input length.

Protocol of the official ``pred.py`` / ``eval.py --e`` (THUDM/LongBench): the prompt is the
dataset's template filled with ``context`` and ``input``; a prompt longer than the budget is
truncated in the middle (its first and last halves kept, here on token ids so the budget is
exact rather than decoded and re-tokenized); the budget follows the official ``model2maxlen``
table, 1000 x (context / 1024) - 500 tokens (3500 for a 4k model, 15500 for 16k); chat models
may wrap the truncated prompt in their chat template (not the few-shot and code tasks); greedy
decoding for the dataset's generation length. Scoring, the official ``result.json`` and the
labelled averages are in `dprope.eval.longbench_scoring`; `eval.longbench_e.predictions_dir`
re-scores saved official-format predictions without a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dprope.config import ConfigError, check_choice, first_line
from dprope.eval.common import BenchmarkResult, EvalContext, check_length, markdown_table
from dprope.eval.generation import greedy_generate
from dprope.eval.longbench_scoring import (
    AVERAGES,
    Prediction,
    aggregate,
    bucket_scores,
    dump_predictions,
    metric_of,
    official_result,
    prediction_file,
    read_predictions,
    score,
)
from dprope.eval.longbench_tasks import BUCKETS, NO_CHAT_TEMPLATE, TASKS, LongBenchTask, length_bucket

HUB_DATASET = "THUDM/LongBench"


@dataclass
class LongBenchConfig:
    datasets: list[str] = field(default_factory=lambda: list(TASKS))  # LongBench-E datasets (all 13)
    data_dir: str | None = None  # directory of <dataset>.jsonl (the official data.zip); null = the hub
    predictions_dir: str | None = (
        None  # re-score DIR/<dataset>.jsonl (official pred.py files, e.g. gov_report.jsonl); no model loads
    )
    max_length: int | None = (
        None  # prompt tokens kept; null = 1000 x (context / 1024) - reserve_tokens (official model2maxlen)
    )
    reserve_tokens: int = 500  # the official budget's margin (3500 of a 4k context)
    chat_template: bool = (
        False  # wrap prompts in the tokenizer's chat template (chat models; official build_chat)
    )
    classification_fix: bool = (
        False  # trec: remove every class contained in the reference (official loop skips some)
    )
    average: str = "categories"  # headline row: categories (official README) | datasets (flat mean of the 13)
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
        if self.reserve_tokens < 0:
            raise ConfigError("reserve_tokens", f"must be >= 0 (got {self.reserve_tokens})")
        check_choice(self, "average", AVERAGES)


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


def prompt_budget(cfg: LongBenchConfig, ctx: EvalContext) -> int:
    """``max_length``, else the official table's rule: 1000 tokens per 1024 of context, minus
    ``reserve_tokens`` (model2maxlen: 4k -> 3500, 8k -> 7500, 16k -> 15500, 32k -> 31500)."""
    return cfg.max_length or ctx.max_positions * 1000 // 1024 - cfg.reserve_tokens


def chat_prompt(tokenizer, text: str) -> list[int]:
    """``text`` as the user turn of the tokenizer's chat template, ready for the answer."""
    wrapped = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(wrapped, add_special_tokens=False)["input_ids"])


def prompt_ids(task: LongBenchTask, tokenizer, prompt: str, budget: int, chat: bool) -> list[int]:
    """Token ids of a prompt cut to ``budget`` in the middle; with ``chat`` (and a task the official
    code wraps), the cut text is then wrapped in the chat template, as the official pred.py does."""
    if not (chat and task.name not in NO_CHAT_TEMPLATE):
        return middle_truncate(list(tokenizer(prompt, add_special_tokens=True)["input_ids"]), budget)
    ids = middle_truncate(list(tokenizer(prompt, add_special_tokens=False)["input_ids"]), budget)
    return chat_prompt(tokenizer, tokenizer.decode(ids))


def build_samples(
    records: Iterable[Mapping[str, Any]], task: LongBenchTask, tokenizer, budget: int, chat: bool = False
) -> list[LongBenchSample]:
    samples = []
    for i, record in enumerate(records):
        prompt = task.prompt.format(context=record["context"], input=record["input"])
        ids = prompt_ids(task, tokenizer, prompt, budget, chat)
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


def needs_model(cfg: LongBenchConfig) -> bool:
    return cfg.predictions_dir is None


def prepare_longbench(cfg: LongBenchConfig, tokenizer, ctx: EvalContext | None) -> dict[str, list]:
    """Read, validate and tokenize every dataset before the model is loaded; when re-scoring,
    read and validate the prediction files instead (no tokenizer, no model)."""
    if cfg.predictions_dir is not None:
        return read_predictions(cfg.predictions_dir, cfg.datasets)
    if cfg.max_length is not None:
        check_length("eval.longbench_e.max_length", cfg.max_length, ctx)
    budget = prompt_budget(cfg, ctx)
    if budget < 1:
        raise ConfigError(
            "eval.longbench_e.reserve_tokens",
            f"leaves no prompt budget ({budget}) for a context of {ctx.max_positions}; lower it or set max_length",
        )
    if cfg.chat_template and getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError("eval.longbench_e.chat_template", "the tokenizer has no chat template")
    prepared = {}
    for name in cfg.datasets:
        task = TASKS[name]
        if budget + new_tokens(cfg, task) > ctx.max_positions and not ctx.allow_beyond_max_position:
            check_length("eval.longbench_e.max_length", budget + new_tokens(cfg, task), ctx)
        records = read_local(cfg.data_dir, name) if cfg.data_dir else read_hub(name)
        prepared[name] = build_samples(records[: cfg.max_samples], task, tokenizer, budget, cfg.chat_template)
    return prepared


def run_longbench(
    model, tokenizer, cfg: LongBenchConfig, prepared: Mapping[str, list], ctx: EvalContext | None
) -> BenchmarkResult:
    """Generate (or take the saved predictions) and score; the same result either way."""
    if cfg.predictions_dir is not None:
        return score_predictions(cfg, prepared)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1:]
    predictions: dict[str, list[Prediction]] = {}
    for name, samples in prepared.items():
        task = TASKS[name]
        texts = greedy_generate(
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
        predictions[name] = [
            Prediction(
                text, s.answers, s.all_classes, s.length, {"_id": s.id, "prompt_tokens": len(s.input_ids)}
            )
            for s, text in zip(samples, texts, strict=True)
        ]
    return score_predictions(cfg, predictions)


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
