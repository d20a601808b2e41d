"""LongBench-E (Bai et al., 2023): the 13 English tasks, scored by input length, as the official
``pred.py`` / ``eval.py --e`` (THUDM/LongBench): the tasks' templates, generation lengths and
metrics (`tasks`, `metrics`), prompts cut to the official budget (`data`), greedy decoding, and
the official scoring, ``result.json`` and labelled averages (`scoring`);
``eval.longbench_e.predictions_dir`` re-scores saved official-format predictions without a
model. Figures: ``longbench_e.png`` (by length bucket) and ``longbench_e_datasets.png``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dprope.eval.benchmark import Benchmark, Display, Inputs
from dprope.eval.benchmarks.longbench_e.config import LongBenchConfig
from dprope.eval.benchmarks.longbench_e.data import new_tokens, prepare_longbench
from dprope.eval.benchmarks.longbench_e.scoring import Prediction, score_predictions
from dprope.eval.benchmarks.longbench_e.tasks import BUCKETS, TASKS
from dprope.eval.common import BenchmarkResult, EvalContext


def prepare(cfg: LongBenchConfig, inputs: Inputs) -> dict[str, list]:
    return prepare_longbench(cfg, inputs.tokenizer, inputs.ctx)


def needs_model(cfg: LongBenchConfig) -> bool:
    return cfg.predictions_dir is None


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
        texts = ctx.backends.generate(
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


def datasets_figure(result: BenchmarkResult, model_name: str, output_dir: Path) -> list[Path]:
    """``longbench_e_datasets.png``: each dataset's score by length bucket and its average."""
    from dprope.eval.plots import heatmap

    datasets = result.details["datasets"]
    columns = [*BUCKETS, "avg"]
    values = [[scores[c] for c in columns] for scores in datasets.values()]
    path = heatmap(
        values,
        list(datasets),
        columns,
        f"LongBench-E, {model_name}",
        output_dir / "longbench_e_datasets.png",
        "length bucket",
        "dataset",
    )
    return [path]


BENCHMARK = Benchmark(
    name="longbench_e",
    display=Display("LongBench-E", "score (x100)"),
    config=LongBenchConfig,
    prepare=prepare,
    run=run_longbench,
    figures=datasets_figure,
    needs_model=needs_model,
)
