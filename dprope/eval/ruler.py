"""RULER (Hsieh et al., 2024): its 13 tasks at several lengths, generated from a seed.

Length rule (RULER's): a sample of length T leaves room for the task's generation length g.
The haystack size (in the task's unit) is searched once per task and length for the largest
prompt of at most T - g tokens (BOS included); each sample then starts from that size and
shrinks by the task's step until its own prompt fits, as RULER's generators do (the step is
capped at a quarter of the haystack, which lengths of 4096 and more never reach). Score: the
task's RULER metric x 100 (string-match-all, or string-match-part for QA) averaged over samples;
the summary is the mean over the tasks that ran at each length, and ``avg`` over lengths.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dprope.config import ConfigError
from dprope.eval.common import BenchmarkResult, EvalContext, check_length, markdown_table, mean
from dprope.eval.generation import greedy_generate
from dprope.eval.ruler_data import read_hotpotqa, read_squad, read_words, words_from_data
from dprope.eval.ruler_tasks import TASKS, Materials, Slot, clean_prediction, score

log = logging.getLogger(__name__)

QA_FILES = {"squad": "squad_file", "hotpotqa": "hotpotqa_file"}


@dataclass
class RulerConfig:
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # keys of ruler_tasks.TASKS (RULER's 13)
    lengths: list[int] = field(default_factory=lambda: [4096, 8192, 16384])  # T = prompt + generation room
    num_samples: int = 500  # samples per task and length (RULER's default: 500)
    max_new_tokens: int | None = None  # null = RULER's per task (NIAH 128, VT 30, CWE 120, FWE 50, QA 32)
    essay_file: str | None = None  # essay haystack, a text file (RULER: Paul Graham's essays)
    essay_split: str | None = None  # else this eval split of the data preset (e.g. test); both null = skipped
    squad_file: str | None = None  # SQuAD 2.0 dev JSON (dev-v2.0.json) for qa_1; null = qa_1 skipped
    hotpotqa_file: str | None = None  # HotpotQA dev distractor JSON for qa_2; null = qa_2 skipped

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("tasks", "must list at least one task")
        for i, name in enumerate(self.tasks):
            if name not in TASKS:
                raise ConfigError(f"tasks[{i}]", f"unknown RULER task {name!r} (known: {', '.join(TASKS)})")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("tasks", f"lists a task twice ({self.tasks})")
        if not self.lengths or any(n <= 0 for n in self.lengths):
            raise ConfigError(
                "lengths", f"must be a non-empty list of positive token counts (got {self.lengths})"
            )
        if self.num_samples < 1:
            raise ConfigError("num_samples", f"must be >= 1 (got {self.num_samples})")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1 or null (got {self.max_new_tokens})")
        for name in ("essay_file", *QA_FILES.values()):
            path = getattr(self, name)
            if path is not None and not Path(path).expanduser().is_file():
                raise ConfigError(name, f"{path} does not exist or is not a file")

    def new_tokens(self, task: str) -> int:
        return self.max_new_tokens or TASKS[task].max_new_tokens


@dataclass
class RulerSample:
    task: str
    length: int
    input_ids: list[int]
    answers: list[str]


@dataclass
class RulerData:
    samples: list[RulerSample]
    tasks: list[str]  # the tasks that run, in config order
    skipped: dict[str, str]  # task -> why it does not run


def essay_words(cfg: RulerConfig, data) -> list[str] | None:
    """The essay haystack: ``essay_file``, else ``essay_split`` of the data preset, else None."""
    if cfg.essay_file is not None:
        return read_words(cfg.essay_file, "eval.ruler.essay_file")
    if cfg.essay_split is None:
        return None
    if data is None:
        raise ConfigError("data", "eval.ruler.essay_split reads a data preset: choose one with data=<preset>")
    return words_from_data(data, cfg.essay_split, "eval.ruler.essay_split", 2 * max(cfg.lengths))


def load_materials(cfg: RulerConfig, tokenizer, data=None) -> tuple[Materials, dict[str, str]]:
    """Files the selected tasks need; a task whose file is not given is skipped (logged)."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])

    materials, skipped = Materials(count), {}
    for task in cfg.tasks:
        if TASKS[task].needs != "essay":
            continue
        if cfg.essay_file is None and cfg.essay_split is None:
            skipped[task] = "neither eval.ruler.essay_file nor eval.ruler.essay_split given"
            log.warning(
                "RULER %s skipped: set eval.ruler.essay_file to a text file (the essay haystack)", task
            )
        elif materials.essay is None:
            materials.essay = essay_words(cfg, data)
    for task in cfg.tasks:
        dataset = TASKS[task].needs
        if dataset not in QA_FILES or dataset in materials.qa:
            continue
        name = QA_FILES[dataset]
        path = getattr(cfg, name)
        if path is None:
            skipped[task] = f"no eval.ruler.{name} given"
            log.warning(
                "RULER %s skipped: set eval.ruler.%s to a local %s file to run it", task, name, dataset
            )
            continue
        reader = read_squad if dataset == "squad" else read_hotpotqa
        qa = reader(path, f"eval.ruler.{name}")
        if cfg.num_samples > len(qa.questions):
            raise ConfigError(
                "eval.ruler.num_samples",
                f"{cfg.num_samples} exceeds the {len(qa.questions)} questions of {path} ({task})",
            )
        materials.qa[dataset] = qa
    return materials, skipped


def build_samples(
    task_name: str, length: int, cfg: RulerConfig, tokenizer, seed: int, materials: Materials
) -> list[RulerSample]:
    """``cfg.num_samples`` prompts of ``task_name`` fitted to ``length``, drawn from ``seed``."""
    task = TASKS[task_name]
    budget = length - cfg.new_tokens(task_name)

    def no_room() -> ConfigError:
        return ConfigError(
            "eval.ruler.lengths",
            f"{length} leaves no room for a {task_name} prompt after {length - budget} generated tokens",
        )

    def render(sample_seed: str, units: int, slot: Slot) -> tuple[list[int], list[str]]:
        text, answers = task.prompt(random.Random(sample_seed), units, slot, materials)
        return list(tokenizer(text, add_special_tokens=True)["input_ids"]), answers

    probe = Slot(length, budget, 0)
    size = task.search(lambda n: len(render(f"{seed}-{task_name}-{length}-search", n, probe)[0]), probe)
    if size is None:
        raise no_room()
    samples = []
    for index in range(cfg.num_samples):
        slot, units, sample_seed = Slot(length, budget, index), size, f"{seed}-{task_name}-{length}-{index}"
        ids, answers = render(sample_seed, units, slot)
        while len(ids) > budget:
            if units <= task.fewest():
                raise no_room()
            # RULER's step; capped at a quarter of the haystack, which only short test lengths reach
            units = max(units - min(task.step(slot), max(1, units // 4)), task.fewest())
            ids, answers = render(sample_seed, units, slot)
        samples.append(RulerSample(task_name, length, ids, answers))
    return samples


def prepare_ruler(cfg: RulerConfig, tokenizer, ctx: EvalContext, data=None) -> RulerData:
    """Every sample of the tasks that can run; ``data`` (a DataConfig) serves ``essay_split``."""
    for length in cfg.lengths:
        check_length("eval.ruler.lengths", length, ctx)
    materials, skipped = load_materials(cfg, tokenizer, data)
    tasks = [t for t in cfg.tasks if t not in skipped]
    if not tasks:
        raise ConfigError(
            "eval.ruler.tasks", f"no task can run: {'; '.join(f'{t} ({w})' for t, w in skipped.items())}"
        )
    samples = [
        s
        for task in tasks
        for length in cfg.lengths
        for s in build_samples(task, length, cfg, tokenizer, ctx.seed, materials)
    ]
    return RulerData(samples, tasks, skipped)


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
    rows = [[t, *(scores[t][c] for c in columns), mean([scores[t][c] for c in columns])] for t in data.tasks]
    rows.append([f"**mean over {len(data.tasks)} tasks**", *summary.values()])
    markdown = "Score x100 (string-match-all; QA: string-match-part) by sequence length (tokens):\n\n"
    markdown += markdown_table(["task", *columns, "avg"], rows)
    if data.skipped:
        markdown += "\n\nSkipped: " + "; ".join(f"{t} ({why})" for t, why in data.skipped.items())
    details = {
        "scores": scores,
        "tasks": data.tasks,
        "nulls": nulls,
        "skipped": data.skipped,
        "samples_per_cell": cfg.num_samples,
        "average": f"mean over the {len(data.tasks)} tasks that ran, per length; avg = mean over lengths",
    }
    return BenchmarkResult("ruler", summary, details, records, markdown)


def run_ruler(model, tokenizer, cfg: RulerConfig, data: RulerData, ctx: EvalContext) -> BenchmarkResult:
    predictions = [""] * len(data.samples)
    for task in data.tasks:
        for length in cfg.lengths:
            group = [i for i, s in enumerate(data.samples) if s.task == task and s.length == length]
            outputs = greedy_generate(
                model,
                tokenizer,
                [data.samples[i].input_ids for i in group],
                cfg.new_tokens(task),
                batch_size=ctx.batch_size,
                desc=f"ruler {task}@{length}",
                progress=ctx.progress,
            )
            for i, text in zip(group, outputs, strict=True):
                predictions[i] = text
    return score_ruler(cfg, data, predictions)
