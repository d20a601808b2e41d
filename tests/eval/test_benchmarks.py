"""The benchmark registry: every folder registered once, the `eval` config built from it, and what
each benchmark declares (display, data preset) used by the reports, comparisons and job."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dprope.eval.benchmarks as benchmarks_package
from dprope.cli import compose_job, hydra_context
from dprope.eval.benchmark import Benchmark
from dprope.eval.benchmarks import BENCHMARKS
from dprope.eval.compare import comparison_markdown
from dprope.eval.job import EvalJob
from dprope.eval.suite import EvalConfig, RunSettings


def test_every_benchmark_folder_is_registered_under_its_name():
    folders = sorted(p.parent.name for p in Path(benchmarks_package.__file__).parent.glob("*/__init__.py"))
    assert sorted(BENCHMARKS) == folders
    for name, benchmark in BENCHMARKS.items():
        assert isinstance(benchmark, Benchmark) and benchmark.name == name
        assert dataclasses.is_dataclass(benchmark.config) and benchmark.config() is not None  # defaults valid


def test_eval_config_is_the_run_settings_then_one_section_per_benchmark():
    names = [f.name for f in dataclasses.fields(EvalConfig)]
    run_wide = [f.name for f in dataclasses.fields(RunSettings)]
    assert names == run_wide + list(BENCHMARKS)
    settings = EvalConfig()
    for name, benchmark in BENCHMARKS.items():
        assert getattr(settings, name) == benchmark.config()


def job(*overrides: str) -> EvalJob:
    with hydra_context("evaluate"):
        return EvalJob.from_config(compose_job("evaluate", ["model=tiny", *overrides]))


def test_the_data_preset_reaches_the_benchmarks_that_read_it():
    assert job("eval=passkey").data is None  # not read: not built (nor checked)
    assert job("eval=perplexity").data.name == "embedded"
    assert job("eval=ruler").data is None
    # RULER's essay haystack from a data split (README): the preset must reach it
    assert job("eval=ruler", "eval.ruler.essay_split=test").data.name == "embedded"


def test_comparison_tables_use_each_benchmarks_digits_and_title():
    tables = {
        "perplexity": {"a": {"256": 12.34567}},
        "passkey": {"a": {"256": 12.34567}},
        "other": {"a": {"x": 1.0}},  # a name this version does not register: plain defaults
    }
    markdown = comparison_markdown(tables)
    assert "## Perplexity\n\n| model | 256 |\n|---|---|\n| a | 12.346 |" in markdown
    assert "## Passkey retrieval\n\n| model | 256 |\n|---|---|\n| a | 12.35 |" in markdown
    assert "## other\n\n| model | x |\n|---|---|\n| a | 1.00 |" in markdown
