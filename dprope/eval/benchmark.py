"""What a benchmark declares, and what it is handed.

A benchmark is one folder ``dprope/eval/benchmarks/<name>/`` whose ``__init__.py`` defines
``BENCHMARK``, a `Benchmark`: its config dataclass (``eval.<name>``), its data preparation (run
before the weights load, so bad input costs seconds), its run and scoring, and how its scores are
shown (`Display`: title, y-label, table digits, axis) with any figure beyond the summary plot, and
its headline numbers in the cross-run table (`headline`). The registry
(`dprope.eval.benchmarks.BENCHMARKS`) lists the folders, one line each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dprope.eval.common import BenchmarkResult, EvalContext


@dataclass(frozen=True)
class Inputs:
    """What `prepare` may use: the tokenizer, the run context and the `data` preset."""

    tokenizer: Any  # None when every selected benchmark re-scores saved predictions
    ctx: EvalContext | None  # None likewise
    data: Any = None  # dprope.data.DataConfig, or None when no selected benchmark reads one


@dataclass(frozen=True)
class Display:
    """How a benchmark's scores are shown in results.md, comparison.md and the figures."""

    title: str  # section title of results.md and comparison.md, and of the figures
    ylabel: str = "score"  # y axis of the summary figure
    digits: int = 2  # decimals of the comparison table
    percent: bool = True  # scores are percentages: the y axis spans 0 to 105
    log_scale: bool = False  # a logarithmic y axis (perplexity)


def _always(cfg: Any) -> bool:
    return True


def _never(cfg: Any) -> bool:
    return False


def default_headline(name: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """A benchmark's columns in the cross-run table, from its ``results.json`` entry: the
    summary's ``avg`` as ``<name>``, or without one each summary column as ``<name> <column>``
    (perplexity per length)."""
    summary = result.get("summary") or {}
    if "avg" in summary:
        return {name: summary["avg"]}
    return {f"{name} {column}": value for column, value in summary.items()}


@dataclass(frozen=True)
class Benchmark:
    name: str  # eval.<name>, its entry in eval.tasks, results.json and file names
    display: Display
    config: type  # the dataclass of eval.<name>; its defaults are the benchmark's
    prepare: Callable[[Any, Inputs], Any]  # (config, inputs) -> prepared data, before the weights load
    # (model, tokenizer, config, prepared data, ctx) -> the result; model, tokenizer and ctx are
    # None when the benchmark re-scores saved predictions (needs_model is False)
    run: Callable[[Any, Any, Any, Any, EvalContext | None], BenchmarkResult]
    # (result, model name, output directory) -> further figures beyond the summary plot
    figures: Callable[[BenchmarkResult, str, Path], list[Path]] | None = None
    needs_model: Callable[[Any], bool] = _always  # (config) -> False: scores saved predictions, no model
    reads_data: Callable[[Any], bool] = _never  # (config) -> True: prepare reads the `data` preset
    # (results.json entry: {summary, details}) -> column -> value of the cross-run headline table;
    # None = `default_headline` (the summary's avg, or each of its columns)
    headline: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None

    def headline_of(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """This benchmark's headline columns of one run's result (see `headline`)."""
        return self.headline(result) if self.headline is not None else default_headline(self.name, result)

    def plot(self, result: BenchmarkResult, model_name: str, output_dir: Path) -> list[Path]:
        """``<name>.png`` (the summary: lines over length or bars per column), then its own figures."""
        from dprope.eval.plots import plot_summaries

        paths = [plot_summaries({model_name: result.summary}, self.display, output_dir / f"{self.name}.png")]
        if self.figures is not None:
            paths += self.figures(result, model_name, output_dir)
        return paths
