"""LongBench v2 (Bai et al., 2024): 503 multiple-choice questions over contexts of 8k to 2M words,
run through lm-eval (`dprope.eval.harness`) over the official ``data.json`` (`data`), reported as
the official leaderboard: overall, easy / hard, short / medium / long (`scoring`).

Two protocols (``protocol``), both one lm-eval task over the same local documents:

- ``official`` (default), the official ``pred.py``: the zero-shot prompt, cut in the middle to
  the budget, 128 generated tokens, the official answer extraction as lm-eval's
  ``process_results`` (greedy where the official queries at temperature 0.1);
- ``lm_eval``: lm-eval's own ``longbench2`` task config (its prompt ending in "Answer:", the four
  letters scored by log-likelihood, ``acc``), only its data source replaced by the local file.

Figure: ``longbench_v2.png`` (one bar per column).
"""

from __future__ import annotations

import functools
from typing import Any

from dprope.eval.benchmark import Benchmark, Display, Inputs
from dprope.eval.benchmarks.longbench_v2.config import TASK, LongBenchV2Config
from dprope.eval.benchmarks.longbench_v2.data import LongBenchV2Data, prepare_longbench_v2
from dprope.eval.benchmarks.longbench_v2.scoring import judge, official_files, score_samples
from dprope.eval.common import BenchmarkResult, EvalContext
from dprope.eval.harness import evaluate_tasks, lm_eval_task_config

FIELD = "eval.longbench_v2"
LM_EVAL_CONFIG = "longbench2/_longbench_common_yaml"  # what every lm-eval longbench2 subtask includes


def prepare(cfg: LongBenchV2Config, inputs: Inputs) -> LongBenchV2Data:
    return prepare_longbench_v2(cfg, inputs.tokenizer, inputs.ctx)


def _documents(docs: list[dict[str, Any]], **kwargs) -> dict[str, Any]:
    """lm-eval's ``custom_dataset``: the prepared documents as the ``train`` split (lm-eval's
    longbench2 reads that split); lm-eval's metadata arguments are not needed."""
    import datasets

    return {"train": datasets.Dataset.from_list(docs)}


def _official_results(doc: dict[str, Any], results: list[str], compensated: bool) -> dict[str, float]:
    return {"acc": judge(results[0], doc["answer"], compensated)}


def _prompt(doc: dict[str, Any]) -> str:
    return doc["prompt"]


def task_spec(cfg: LongBenchV2Config, data: LongBenchV2Data) -> dict[str, Any]:
    """The inline lm-eval task of the protocol over the prepared documents."""
    source = {
        "task": TASK,
        "dataset_path": cfg.data_file,
        "dataset_name": None,
        "custom_dataset": functools.partial(_documents, data.docs),
        "test_split": "train",
    }
    if cfg.protocol == "lm_eval":
        return {**lm_eval_task_config(LM_EVAL_CONFIG), **source}
    return {
        **source,
        "output_type": "generate_until",
        "doc_to_text": _prompt,
        "doc_to_target": "answer",
        "generation_kwargs": {"until": [], "max_gen_toks": cfg.max_new_tokens, "do_sample": False},
        "process_results": functools.partial(_official_results, compensated=cfg.compensated),
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def run_longbench_v2(
    model, tokenizer, cfg: LongBenchV2Config, data: LongBenchV2Data, ctx: EvalContext
) -> BenchmarkResult:
    from lm_eval.tasks import TaskManager

    logged: dict[str, list[dict[str, Any]]] = {}
    summary, _, _ = evaluate_tasks(
        model,
        tokenizer,
        cfg,
        TaskManager(include_defaults=False),  # the task is inline: nothing to index
        ctx,
        FIELD,
        specs={TASK: task_spec(cfg, data)},
        on_samples=logged.__setitem__,
    )
    result = score_samples(logged[TASK], cfg.protocol, cfg.compensated, data.truncated)
    result.details["lm_eval_acc"] = summary[TASK]  # lm-eval's own mean: equal to overall
    result.details["prompt_budget"] = data.budget
    result.files = official_files(result.samples, {d["_id"]: d for d in data.docs}, data.contexts)
    return result


def headline(result) -> dict:
    return {"longbench_v2": (result.get("summary") or {}).get("overall")}


BENCHMARK = Benchmark(
    name="longbench_v2",
    display=Display("LongBench v2", "accuracy (x100)", digits=1),
    config=LongBenchV2Config,
    prepare=prepare,
    run=run_longbench_v2,
    headline=headline,
)
