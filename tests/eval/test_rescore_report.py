"""Re-scoring saved LongBench-E predictions runs no model: the report names the predictions (their
directory, or the model of the evaluation run that wrote them), never the model preset, and has
no row of empty model fields."""

from __future__ import annotations

import json

from dprope.eval.benchmarks.longbench_e.config import LongBenchConfig
from dprope.eval.report import report_markdown, write_results
from dprope.eval.suite import EvalConfig, run_suite
from dprope.model import ModelConfig
from tests.eval.longbench_fixtures import write_predictions


def rescored(directory):
    settings = EvalConfig(tasks=["longbench_e"], longbench_e=LongBenchConfig(predictions_dir=str(directory)))
    return run_suite(ModelConfig(name="llama2-7b", tokenizer="byte"), settings)  # the evaluate.yaml default


def test_official_layout_is_named_by_its_directory(tmp_path):
    directory = write_predictions(tmp_path / "pred_e" / "llama2-7b-chat-4k")
    report = rescored(directory)
    text = report_markdown(report)
    assert text.startswith("# Re-scored predictions: llama2-7b-chat-4k\n")
    assert f"| longbench_e | {directory} |" in text
    assert "None" not in text and "Evaluation: llama2-7b" not in text
    assert report.model["name"] == "llama2-7b-chat-4k" and report.model["rescored"]
    assert report.model["predictions"] == {"longbench_e": str(directory)}


def test_an_evaluation_runs_own_predictions_keep_its_model_name(tmp_path):
    run = tmp_path / "run"
    directory = write_predictions(run / "longbench_e")  # <run>/longbench_e/, as a run writes them
    (run / "results.json").write_text(json.dumps({"model": {"name": "ours-16k"}}))
    report = rescored(directory)
    assert report.model["name"] == "ours-16k"
    out = tmp_path / "out"
    write_results(report, out)
    assert (out / "results.md").read_text().startswith("# Re-scored predictions: ours-16k\n")
    assert json.loads((out / "results.json").read_text())["model"]["name"] == "ours-16k"
