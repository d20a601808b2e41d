"""Short-context benchmarks in the DPRoPE paper's settings (docs/method-notes.md, section 7) through
lm-eval (EleutherAI's lm-evaluation-harness): TruthfulQA (mc2) 0-shot, HellaSwag 0-shot
(acc_norm), MMLU 5-shot (acc) and ARC-challenge 25-shot (acc_norm). The tasks are those of the
Open LLM Leaderboard (v1), but these are the paper's settings, not the leaderboard's: the
leaderboard ran HellaSwag 10-shot. As the leaderboard, MMLU is the unweighted mean of its 57
subjects (``subtask_mean``), not lm-eval's group score weighted by subject size; the few-shot
examples are drawn with lm-eval's default seed (1234).

The already loaded model and tokenizer are wrapped in lm-eval's ``HFLM``; each task runs with
its own few-shot count through ``simple_evaluate`` and one ``TaskManager``, which also indexes
``include_path`` (a directory of task YAMLs, e.g. a task over local files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dprope.config import ConfigError
from dprope.eval.common import BenchmarkResult, EvalContext, check_length, markdown_table, mean


@dataclass
class LmEvalTask:
    name: str  # lm-eval task or group name
    num_fewshot: int = 0  # in-context examples
    metric: str = "acc"  # reported metric, as lm-eval names it (acc, acc_norm, ...)
    subtask_mean: bool = False  # a group's score = unweighted mean of its leaf subtasks (leaderboard MMLU), not lm-eval's size-weighted one

    def __post_init__(self) -> None:
        if self.num_fewshot < 0:
            raise ConfigError("num_fewshot", f"must be >= 0 (got {self.num_fewshot})")


def _paper_settings() -> list[LmEvalTask]:
    return [
        LmEvalTask("truthfulqa_mc2", 0, "acc"),
        LmEvalTask("hellaswag", 0, "acc_norm"),  # the paper's 0-shot (the leaderboard: 10-shot)
        LmEvalTask("mmlu", 5, "acc", subtask_mean=True),
        LmEvalTask("arc_challenge", 25, "acc_norm"),
    ]


@dataclass
class OpenLLMConfig:
    tasks: list[LmEvalTask] = field(
        default_factory=_paper_settings
    )  # {name, num_fewshot, metric, subtask_mean} per task
    include_path: str | None = None  # extra directory of lm-eval task YAMLs
    include_defaults: bool = True  # also index lm-eval's built-in tasks (false: only include_path, faster)
    limit: int | None = None  # first N examples per task (quick checks only); null = all
    max_length: int | None = None  # lm-eval's context window; null = the checkpoint's max_position_embeddings
    bootstrap_iters: int = 1000  # lm-eval's resamples for standard errors of non-mean metrics (0 = none)
    fewshot_seed: int = (
        1234  # seed of the few-shot example draw (lm-eval's default); other seeds stay lm-eval's
    )

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("tasks", "must list at least one task")
        names = [t.name for t in self.tasks]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ConfigError(f"tasks[{i}].name", f"{name!r} is listed twice (one row per task)")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", f"must be >= 1 or null (got {self.limit})")
        if not self.include_defaults and not self.include_path:
            raise ConfigError("include_path", "must be set when include_defaults is false")


def prepare_open_llm(cfg: OpenLLMConfig, ctx: EvalContext):
    """Index the tasks and check every name before the model is loaded."""
    from pathlib import Path

    if cfg.max_length is not None:
        check_length("eval.open_llm.max_length", cfg.max_length, ctx)
    if cfg.include_path and not Path(cfg.include_path).expanduser().is_dir():
        raise ConfigError("eval.open_llm.include_path", f"no directory at {cfg.include_path}")
    from lm_eval.tasks import TaskManager

    include = str(Path(cfg.include_path).expanduser()) if cfg.include_path else None
    manager = TaskManager(include_path=include, include_defaults=cfg.include_defaults)
    known = set(manager.all_tasks)
    for i, task in enumerate(cfg.tasks):
        if task.name not in known:
            raise ConfigError(f"eval.open_llm.tasks[{i}].name", f"unknown lm-eval task {task.name!r}")
    return manager


def leaf_subtasks(results: dict[str, Any], name: str) -> list[str]:
    """The leaf tasks under ``name`` in lm-eval's ``group_subtasks`` (``name`` itself for a task)."""
    groups = results.get("group_subtasks", {})
    if not groups.get(name):
        return [name]
    return [leaf for sub in groups[name] for leaf in leaf_subtasks(results, sub)]


def task_score(results: dict[str, Any], task: LmEvalTask, index: int) -> tuple[float, float | None]:
    """(score x 100, standard error x 100) of a task from lm-eval's results; with
    ``subtask_mean``, the unweighted mean of its leaf subtasks (no standard error)."""
    if task.subtask_mean and len(leaf_subtasks(results, task.name)) > 1:
        leaves = leaf_subtasks(results, task.name)
        scores = [
            task_score(results, LmEvalTask(leaf, task.num_fewshot, task.metric), index)[0] for leaf in leaves
        ]
        return mean(scores), None
    row = results["results"].get(task.name, {})
    key = f"{task.metric},none"
    if key not in row:
        reported = sorted(k.split(",")[0] for k in row if "," in k and "_stderr" not in k)
        raise ConfigError(
            f"eval.open_llm.tasks[{index}].metric",
            f"{task.name} reports no {task.metric!r} (it reports {reported})",
        )
    stderr = row.get(f"{task.metric}_stderr,none")
    return 100.0 * float(row[key]), 100.0 * float(stderr) if isinstance(stderr, (int, float)) else None


def run_open_llm(model, tokenizer, cfg: OpenLLMConfig, manager, ctx: EvalContext) -> BenchmarkResult:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=ctx.batch_size,
        max_length=cfg.max_length or ctx.max_positions,
    )
    rows, summary, details = [], {}, {}
    for i, task in enumerate(cfg.tasks):
        results = simple_evaluate(
            model=lm,
            tasks=[task.name],
            num_fewshot=task.num_fewshot,
            task_manager=manager,
            limit=cfg.limit,
            bootstrap_iters=cfg.bootstrap_iters,
            log_samples=False,
            fewshot_random_seed=cfg.fewshot_seed,
        )
        score, stderr = task_score(results, task, i)
        summary[task.name] = score
        details[task.name] = {
            "metric": task.metric,
            "num_fewshot": task.num_fewshot,
            "average": "unweighted mean of subtasks" if task.subtask_mean else "lm-eval",
            "score": score,
            "stderr": stderr,
        }
        rows.append(
            [task.name, task.num_fewshot, task.metric, score, "n/a" if stderr is None else f"{stderr:.2f}"]
        )
    summary["avg"] = mean([summary[t.name] for t in cfg.tasks])
    rows.append(["**average**", "", "", summary["avg"], ""])
    markdown = (
        "The DPRoPE paper's short-context settings (HellaSwag 0-shot; the leaderboard used 10-shot):\n\n"
    )
    markdown += markdown_table(["task", "shots", "metric", "score (x100)", "stderr"], rows)
    return BenchmarkResult("open_llm", summary, {"tasks": details}, [], markdown)
