"""RULER (Hsieh et al., 2024): its 13 tasks (`tasks`, over the word lists, essays and QA sets of
`sources`) at several lengths, generated from a seed and fitted to each length (`data`), greedy
decoding for each task's generation length, and RULER's metrics (`scoring`). Figures:
``ruler.png`` (the mean over tasks by length) and ``ruler_tasks.png`` (each task).
"""

from __future__ import annotations

from pathlib import Path

from dprope.eval.benchmark import Benchmark, Display, Inputs
from dprope.eval.benchmarks.ruler.config import RulerConfig
from dprope.eval.benchmarks.ruler.data import RulerData, prepare_ruler
from dprope.eval.benchmarks.ruler.scoring import score_ruler
from dprope.eval.common import BenchmarkResult, EvalContext

DISPLAY = Display("RULER", "string match (x100)")


def prepare(cfg: RulerConfig, inputs: Inputs) -> RulerData:
    return prepare_ruler(cfg, inputs.tokenizer, inputs.ctx, inputs.data)


def run_ruler(model, tokenizer, cfg: RulerConfig, data: RulerData, ctx: EvalContext) -> BenchmarkResult:
    """One generation call per task and length (each task has its own generation length)."""
    predictions = [""] * len(data.samples)
    for task in data.tasks:
        for length in cfg.lengths:
            group = [i for i, s in enumerate(data.samples) if s.task == task and s.length == length]
            outputs = ctx.backends.generate(
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


def tasks_figure(result: BenchmarkResult, model_name: str, output_dir: Path) -> list[Path]:
    """``ruler_tasks.png``: one line per task over the lengths."""
    from dprope.eval.plots import plot_summaries

    return [plot_summaries(result.details["scores"], DISPLAY, output_dir / "ruler_tasks.png")]


def headline(result) -> dict:
    """The cross-run table's RULER columns: the mean over tasks at each length, then the effective
    length as RULER's README writes it (``>16384`` when the longest length passes)."""
    summary = result.get("summary") or {}
    columns = {f"ruler {c}": v for c, v in summary.items() if c != "avg"}
    aggregates = (result.get("details") or {}).get("aggregates") or {}
    return {**columns, "ruler effective length": aggregates.get("effective_length_label")}


BENCHMARK = Benchmark(
    name="ruler",
    display=DISPLAY,
    config=RulerConfig,
    prepare=prepare,
    run=run_ruler,
    figures=tasks_figure,
    reads_data=lambda cfg: cfg.essay_split is not None,
    headline=headline,
)
