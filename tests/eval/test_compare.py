"""The comparison of several runs: one table and one plot per benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dprope.config import ConfigError
from dprope.eval.compare import comparison_markdown, comparison_tables, labels_for, load_run, write_comparison

ROOT = Path(__file__).resolve().parents[2]


def fake_run(path: Path, name: str, passkey: dict, longbench: dict | None = None) -> Path:
    benchmarks = {"passkey": {"summary": passkey, "details": {}}}
    if longbench is not None:
        benchmarks["longbench_e"] = {"summary": longbench, "details": {}}
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"model": {"name": name}, "benchmarks": benchmarks}))
    return path


@pytest.fixture
def runs(tmp_path):
    return [
        fake_run(
            tmp_path / "pi",
            "pi-16k",
            {"4096": 100.0, "16384": 40.0, "avg": 70.0},
            {"0-4k": 30.0, "4-8k": 28.0, "8k+": None, "avg": 29.0},
        ),
        fake_run(
            tmp_path / "ours",
            "ours-16k",
            {"4096": 100.0, "16384": 90.0, "avg": 95.0},
            {"0-4k": 33.0, "4-8k": 31.0, "8k+": 27.0, "avg": 30.3},
        ),
        fake_run(tmp_path / "yarn", "yarn-16k", {"4096": 100.0, "8192": 80.0, "avg": 90.0}),
    ]


def test_tables_put_models_side_by_side(runs):
    data = [load_run(str(p)) for p in runs]
    tables = comparison_tables(data, labels_for(data, [str(p) for p in runs], None))
    assert list(tables) == ["passkey", "longbench_e"]
    assert list(tables["longbench_e"]) == ["pi-16k", "ours-16k"]  # yarn has no LongBench-E result
    markdown = comparison_markdown(tables)
    assert "| model | 4096 | 16384 | 8192 | avg |" in markdown
    assert "| yarn-16k | 100.00 | n/a | 80.00 | 90.00 |" in markdown
    assert "| pi-16k | 30.00 | 28.00 | n/a | 29.00 |" in markdown


def test_script_writes_markdown_json_and_one_plot_per_benchmark(runs, tmp_path):
    out = tmp_path / "compare"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "compare_eval.py"),
            *map(str, runs),
            "--names",
            "pi",
            "ours",
            "yarn",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| ours |" in proc.stdout
    assert {p.name for p in out.iterdir()} == {
        "comparison.md",
        "comparison.csv",
        "comparison.json",
        "passkey.png",
        "longbench_e.png",
    }


def test_bad_runs_and_names(runs, tmp_path):
    with pytest.raises(ConfigError, match="^runs: no results.json at"):
        load_run(str(tmp_path / "missing"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="has no 'benchmarks'"):
        load_run(str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="^names: gives 1 names for 3 runs"):
        write_comparison([str(p) for p in runs], tmp_path / "out", ["one"])


def test_same_model_name_twice_is_told_apart_by_directory(tmp_path):
    paths = [fake_run(tmp_path / d, "llama2-7b", {"4096": 1.0}) for d in ("a", "b")]
    labels = labels_for([load_run(str(p)) for p in paths], [str(p) for p in paths], None)
    assert labels == ["llama2-7b (a)", "llama2-7b (b)"]


def test_wandb_offline_run_gets_scores_and_plots(tmp_path, monkeypatch):
    """logger=wandb without an API key: an offline run in the run directory, never a prompt."""
    from dprope.eval.common import BenchmarkResult
    from dprope.eval.report import flat_scores, log_to_wandb, write_figures
    from dprope.eval.suite import EvalReport
    from dprope.tracking import LoggerConfig

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    result = BenchmarkResult("perplexity", {"128": 12.5, "256": 11.0})
    report = EvalReport({"name": "tiny"}, {"tasks": ["perplexity"]}, {"perplexity": result})
    assert flat_scores(report) == {"perplexity/128": 12.5, "perplexity/256": 11.0}
    figures = write_figures(report, "tiny", tmp_path)
    log_to_wandb(LoggerConfig(kind="wandb", project="dprope-test"), tmp_path, report, figures)
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def full_run(path: Path, name: str, benchmarks: dict) -> Path:
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"model": {"name": name}, "benchmarks": benchmarks}))
    return path


def test_headline_table_has_every_benchmarks_number_and_empty_cells(tmp_path):
    """One row per run; LongBench-E's and Open LLM's averages, RULER per length and its effective
    length, passkey accuracy, perplexity per length; a benchmark a run lacks is an empty cell."""
    ruler = {
        "summary": {"4096": 91.0, "8192": 80.0, "avg": 85.5},
        "details": {"aggregates": {"effective_length": 4096, "effective_length_label": "4096"}},
    }
    first = full_run(
        tmp_path / "a",
        "ours-16k",
        {
            "passkey": {"summary": {"1024": 100.0, "2048": 90.0, "avg": 95.0}, "details": {}},
            "perplexity": {"summary": {"8192": 7.12345, "16384": 6.5}, "details": {}},
            "longbench_e": {"summary": {"0-4k": 30.0, "avg": 29.5}, "details": {}},
            "ruler": ruler,
            "open_llm": {"summary": {"mmlu": 45.0, "avg": 50.25}, "details": {}},
        },
    )
    second = full_run(  # an older results.json: RULER without aggregates, no other benchmark
        tmp_path / "b", "pi-16k", {"ruler": {"summary": {"4096": 70.0, "avg": 70.0}, "details": {}}}
    )
    out = tmp_path / "out"
    markdown, written = write_comparison([str(first), str(second)], out)
    header = (
        "| model | passkey | perplexity 8192 | perplexity 16384 | longbench_e | ruler 4096 | ruler 8192 "
        "| ruler effective length | open_llm |"
    )
    assert header in markdown
    assert "| ours-16k | 95.00 | 7.123 | 6.500 | 29.50 | 91.00 | 80.00 | 4096 | 50.25 |" in markdown
    assert "| pi-16k |  |  |  |  | 70.00 |  |  |  |" in markdown
    csv_text = (out / "comparison.csv").read_text()
    assert csv_text.splitlines() == [
        "model,passkey,perplexity 8192,perplexity 16384,longbench_e,ruler 4096,ruler 8192,ruler effective length,open_llm",
        "ours-16k,95.0,7.12345,6.5,29.5,91.0,80.0,4096,50.25",
        "pi-16k,,,,,70.0,,,",
    ]
    assert json.loads((out / "comparison.json").read_text())["headline"]["pi-16k"]["passkey"] is None
    assert markdown.index("## Headline") < markdown.index("## Passkey retrieval")
