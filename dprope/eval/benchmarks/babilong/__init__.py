"""BABILong (Kuratov et al., 2024): reasoning over facts hidden in long PG19 text, through
lm-eval's own ``babilong_qa1`` ... ``babilong_qa20`` tasks (their instructions, two in-context
examples, 16 greedy tokens and lm-eval's scoring: the target found in the cleaned answer,
case-insensitive), one lm-eval task per task and length over local files (`data`). lm-eval runs
one length per call (its ``max_seq_lengths`` metadata); here every length of ``lengths`` runs.
Reported by task and length, the mean over tasks at each length (BABILong's leaderboard
averages qa1-qa5) and ``avg`` over lengths. Figures: ``babilong.png`` (mean by length) and
``babilong_tasks.png`` (task x length).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from dprope.eval.benchmark import Benchmark, Display, Inputs
from dprope.eval.benchmarks.babilong.config import BabilongConfig
from dprope.eval.benchmarks.babilong.data import BabilongData, prepare_babilong
from dprope.eval.common import BenchmarkResult, EvalContext, markdown_table, mean
from dprope.eval.harness import LmEvalConfig, LmEvalTask, evaluate_tasks, lm_eval_task_config

FIELD = "eval.babilong"
DISPLAY = Display("BABILong", "accuracy (x100)")


def prepare(cfg: BabilongConfig, inputs: Inputs) -> BabilongData:
    return prepare_babilong(cfg, inputs.ctx)


def _documents(split: str, docs: list[dict[str, Any]], **kwargs) -> dict[str, Any]:
    """lm-eval's ``custom_dataset``: the local rows as the task's split (``qa1``, ...), in place of
    its hub loader; lm-eval's metadata arguments are not needed."""
    import datasets

    return {split: datasets.Dataset.from_list(docs)}


def task_name(qa: str, length: str) -> str:
    return f"babilong_{qa}_{length}"


def task_spec(cfg: BabilongConfig, qa: str, length: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """lm-eval's own ``babilong_<qa>`` config, renamed per length, its data the local rows."""
    return {
        **lm_eval_task_config(f"babilong/babilong_{qa}.yaml"),
        "task": task_name(qa, length),
        "dataset_path": cfg.data_dir,
        "custom_dataset": functools.partial(_documents, qa, docs),
    }


def run_babilong(
    model, tokenizer, cfg: BabilongConfig, data: BabilongData, ctx: EvalContext
) -> BenchmarkResult:
    from lm_eval.tasks import TaskManager

    qas = [t.name.removeprefix("babilong_") for t in cfg.tasks]
    runs = LmEvalConfig(  # one lm-eval task per task and length
        tasks=[
            LmEvalTask(task_name(qa, n), t.num_fewshot, t.metric)
            for qa, t in zip(qas, cfg.tasks, strict=True)
            for n in data.lengths
        ],
        limit=cfg.limit,
        max_length=cfg.max_length,
        bootstrap_iters=cfg.bootstrap_iters,
        fewshot_seed=cfg.fewshot_seed,
        include_defaults=True,
    )
    specs = {task_name(qa, n): task_spec(cfg, qa, n, data.docs[qa, n]) for qa in qas for n in data.lengths}
    records: list[dict[str, Any]] = []

    def keep(name: str, samples: list[dict[str, Any]]) -> None:
        qa, length = name.removeprefix("babilong_").split("_")
        for sample in samples:
            prediction = sample["filtered_resps"]
            while isinstance(prediction, (list, tuple)):
                prediction = prediction[0]
            doc = sample["doc"]
            records.append(
                {
                    "task": qa,
                    "length": length,
                    "question": doc["question"],
                    "target": doc["target"],
                    "prediction": prediction,
                    "score": float(sample["acc"]),
                }
            )

    scores, _, _ = evaluate_tasks(
        model, tokenizer, runs, TaskManager(include_defaults=False), ctx, FIELD, specs=specs, on_samples=keep
    )
    grid = {qa: {n: scores[task_name(qa, n)] for n in data.lengths} for qa in qas}  # task -> length -> x100
    summary = {n: mean([grid[qa][n] for qa in qas]) for n in data.lengths}
    summary["avg"] = mean([summary[n] for n in data.lengths])
    rows = [[qa, *(grid[qa][n] for n in data.lengths), mean(list(grid[qa].values()))] for qa in qas]
    rows.append([f"**mean over {len(qas)} tasks**", *summary.values()])
    markdown = "Accuracy (x100; lm-eval: the target in the answer) by task and length:\n\n"
    markdown += markdown_table(["task", *data.lengths, "avg"], rows)
    details = {
        "scores": grid,
        "tasks": qas,
        "lengths": data.lengths,
        "samples_per_cell": {f"{qa}/{n}": len(data.docs[qa, n]) for qa in qas for n in data.lengths},
        "num_fewshot": {qa: t.num_fewshot for qa, t in zip(qas, cfg.tasks, strict=True)},
        "average": f"mean over the {len(qas)} tasks per length; avg = mean over lengths",
    }
    return BenchmarkResult("babilong", summary, details, records, markdown)


def tasks_figure(result: BenchmarkResult, model_name: str, output_dir: Path) -> list[Path]:
    """``babilong_tasks.png``: accuracy by task (rows) and length (columns)."""
    from dprope.eval.plots import heatmap

    details = result.details
    values = [[details["scores"][qa][n] for n in details["lengths"]] for qa in details["tasks"]]
    path = heatmap(
        values,
        details["tasks"],
        details["lengths"],
        f"BABILong accuracy (%), {model_name}",
        output_dir / "babilong_tasks.png",
        "length",
        "task",
    )
    return [path]


BENCHMARK = Benchmark(
    name="babilong",
    display=DISPLAY,
    config=BabilongConfig,
    prepare=prepare,
    run=run_babilong,
    figures=tasks_figure,
)
