"""LongBench-E's data, read and tokenized before the model loads, as the official ``pred.py``
(THUDM/LongBench): the prompt is the dataset's template filled with ``context`` and ``input``; a
prompt longer than the budget is truncated in the middle (its first and last halves kept, here on
token ids so the budget is exact rather than decoded and re-tokenized); the budget follows the
official ``model2maxlen`` table, 1000 x (context / 1024) - 500 tokens (3500 for a 4k model, 15500
for 16k); chat models may wrap the truncated prompt in their chat template (not the few-shot and
code tasks). With ``predictions_dir``, saved official-format predictions are read instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dprope.config import ConfigError, first_line
from dprope.eval.benchmarks.longbench_e.config import LongBenchConfig
from dprope.eval.benchmarks.longbench_e.scoring import read_predictions
from dprope.eval.benchmarks.longbench_e.tasks import NO_CHAT_TEMPLATE, TASKS, LongBenchTask
from dprope.eval.chat import chat_ids
from dprope.eval.common import EvalContext, check_length
from dprope.inputs import read_text

HUB_DATASET = "THUDM/LongBench"


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
    for lineno, line in enumerate(read_text(path, "eval.longbench_e.data_dir").splitlines(), 1):
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


def prompt_ids(task: LongBenchTask, tokenizer, prompt: str, budget: int, chat: bool) -> list[int]:
    """Token ids of a prompt cut to ``budget`` in the middle; with ``chat`` (and a task the official
    code wraps), the cut text is then wrapped in the chat template, as the official pred.py does."""
    if not (chat and task.name not in NO_CHAT_TEMPLATE):
        return middle_truncate(list(tokenizer(prompt, add_special_tokens=True)["input_ids"]), budget)
    ids = middle_truncate(list(tokenizer(prompt, add_special_tokens=False)["input_ids"]), budget)
    return chat_ids(tokenizer, tokenizer.decode(ids))


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
    prepared = {}
    for name in cfg.datasets:
        task = TASKS[name]
        if budget + new_tokens(cfg, task) > ctx.max_positions and not ctx.allow_beyond_max_position:
            check_length("eval.longbench_e.max_length", budget + new_tokens(cfg, task), ctx)
        records = read_local(cfg.data_dir, name) if cfg.data_dir else read_hub(name)
        prepared[name] = build_samples(records[: cfg.max_samples], task, tokenizer, budget, ctx.chat_template)
    return prepared
