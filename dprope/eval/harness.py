"""The bridge to lm-eval (EleutherAI's lm-evaluation-harness), shared by every benchmark that runs
lm-eval tasks (`dprope.eval.benchmarks.open_llm`, `longbench_v2`, `babilong`).

A benchmark's config extends `LmEvalConfig` with its own default task list. `index_tasks`
indexes lm-eval's tasks (and ``include_path``, a directory of task YAMLs, e.g. a task over
local files) with one ``TaskManager`` and checks every name before the model is loaded.
`evaluate_tasks` wraps the already loaded model and tokenizer in an lm-eval model (``HFLM`` by
default, `dprope.eval.backends`) and runs each task with its own few-shot count through
``simple_evaluate``. A group's score is lm-eval's (size-weighted), or with ``subtask_mean`` the
unweighted mean of its leaf subtasks (the Open LLM Leaderboard's MMLU). A benchmark over local
files hands `evaluate_tasks` inline task configs (``specs``: lm-eval's own task config read by
`lm_eval_task_config`, with its data source replaced) and may read each task's logged samples
(``on_samples``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dprope.config import ConfigError
from dprope.eval.common import EvalContext, check_length, markdown_table, mean
from dprope.eval.offline import check_task_data


@dataclass
class LmEvalTask:
    name: str  # lm-eval task or group name
    num_fewshot: int = 0  # in-context examples
    metric: str = "acc"  # reported metric, as lm-eval names it (acc, acc_norm, ...)
    subtask_mean: bool = False  # a group's score = unweighted mean of its leaf subtasks (leaderboard MMLU), not lm-eval's size-weighted one

    def __post_init__(self) -> None:
        if self.num_fewshot < 0:
            raise ConfigError("num_fewshot", f"must be >= 0 (got {self.num_fewshot})")


@dataclass
class LmEvalConfig:
    """The settings of an lm-eval benchmark; a subclass gives ``tasks`` its default list."""

    # {name, num_fewshot, metric, subtask_mean} per task; the subclass's default list
    tasks: list[LmEvalTask] = field(default_factory=list)
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


def index_tasks(cfg: LmEvalConfig, ctx: EvalContext, field_name: str):
    """lm-eval's ``TaskManager`` over the configured task directories, every task name checked;
    ``field_name`` is the config's place (``eval.open_llm``), for the errors."""
    if cfg.max_length is not None:
        check_length(f"{field_name}.max_length", cfg.max_length, ctx)
    if cfg.include_path and not Path(cfg.include_path).expanduser().is_dir():
        raise ConfigError(f"{field_name}.include_path", f"no directory at {cfg.include_path}")
    from lm_eval.tasks import TaskManager

    include = str(Path(cfg.include_path).expanduser()) if cfg.include_path else None
    manager = TaskManager(include_path=include, include_defaults=cfg.include_defaults)
    known = set(manager.all_tasks)
    for i, task in enumerate(cfg.tasks):
        if task.name not in known:
            raise ConfigError(f"{field_name}.tasks[{i}].name", f"unknown lm-eval task {task.name!r}")
    check_task_data(manager, [t.name for t in cfg.tasks], f"{field_name}.tasks")  # offline: cached?
    return manager


def lm_eval_task_config(relative: str) -> dict[str, Any]:
    """lm-eval's own task config ``lm_eval/tasks/<relative>`` as lm-eval reads it (its includes
    merged, its ``!function`` entries resolved), to be run with some keys replaced."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(Path(lm_eval.tasks.__file__).parent / relative, resolve_func=True)


def leaf_subtasks(results: dict[str, Any], name: str) -> list[str]:
    """The leaf tasks under ``name`` in lm-eval's ``group_subtasks`` (``name`` itself for a task)."""
    groups = results.get("group_subtasks", {})
    if not groups.get(name):
        return [name]
    return [leaf for sub in groups[name] for leaf in leaf_subtasks(results, sub)]


def task_score(results: dict[str, Any], task: LmEvalTask, field_name: str) -> tuple[float, float | None]:
    """(score x 100, standard error x 100) of a task from lm-eval's results; with
    ``subtask_mean``, the unweighted mean of its leaf subtasks (no standard error).
    ``field_name`` is the task's place in the config (``eval.open_llm.tasks[2]``), for the errors."""
    if task.subtask_mean and len(leaf_subtasks(results, task.name)) > 1:
        leaves = leaf_subtasks(results, task.name)
        scores = [
            task_score(results, LmEvalTask(leaf, task.num_fewshot, task.metric), field_name)[0]
            for leaf in leaves
        ]
        return mean(scores), None
    row = results["results"].get(task.name, {})
    key = f"{task.metric},none"
    if key not in row:
        reported = sorted(k.split(",")[0] for k in row if "," in k and "_stderr" not in k)
        raise ConfigError(
            f"{field_name}.metric", f"{task.name} reports no {task.metric!r} (it reports {reported})"
        )
    stderr = row.get(f"{task.metric}_stderr,none")
    return 100.0 * float(row[key]), 100.0 * float(stderr) if isinstance(stderr, (int, float)) else None


def evaluate_tasks(
    model,
    tokenizer,
    cfg: LmEvalConfig,
    manager,
    ctx: EvalContext,
    field_name: str,
    specs: Mapping[str, dict[str, Any]] | None = None,
    on_samples: Callable[[str, list[dict[str, Any]]], None] | None = None,
) -> tuple[dict[str, float], dict[str, Any], str]:
    """Run every task of ``cfg``: (summary: task -> score x 100 and ``avg``, details per task,
    the markdown table). ``specs`` maps a task name to its inline lm-eval config (run instead of
    the name); ``on_samples(task, samples)`` receives lm-eval's logged samples of each task."""
    from lm_eval import simple_evaluate

    lm = ctx.backends.lm_eval_model(model, tokenizer, ctx.batch_size, cfg.max_length or ctx.max_positions)
    rows, summary, details = [], {}, {}
    for i, task in enumerate(cfg.tasks):
        results = simple_evaluate(
            model=lm,
            tasks=[(specs or {}).get(task.name, task.name)],
            num_fewshot=task.num_fewshot,
            task_manager=manager,
            limit=cfg.limit,
            bootstrap_iters=cfg.bootstrap_iters,
            log_samples=on_samples is not None,
            fewshot_random_seed=cfg.fewshot_seed,
            # eval.chat_template: lm-eval's own chat formatting (few-shot examples as turns of it)
            apply_chat_template=ctx.chat_template,
            fewshot_as_multiturn=ctx.chat_template and task.num_fewshot > 0,
        )
        if on_samples is not None:
            on_samples(task.name, results["samples"][task.name])
        score, stderr = task_score(results, task, f"{field_name}.tasks[{i}]")
        summary[task.name] = score
        details[task.name] = {
            "metric": task.metric,
            "num_fewshot": task.num_fewshot,
            "average": "unweighted mean of subtasks" if task.subtask_mean else "lm-eval",
            "chat_template": ctx.chat_template,
            "score": score,
            "stderr": stderr,
        }
        rows.append(
            [task.name, task.num_fewshot, task.metric, score, "n/a" if stderr is None else f"{stderr:.2f}"]
        )
    summary["avg"] = mean([summary[t.name] for t in cfg.tasks])
    rows.append(["**average**", "", "", summary["avg"], ""])
    table = markdown_table(["task", "shots", "metric", "score (x100)", "stderr"], rows)
    return summary, details, table
