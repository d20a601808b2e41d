"""LongBench-E against the official THUDM/LongBench scorer (commit 2e00731): each metric on fixed
strings, the result.json of a fixed prediction set, an oracle that must score 100 through
`launch/eval.py`, and the re-scoring errors.

The expected numbers were produced with the official functions, run from a checkout of the
official repository (LongBench/metrics.py and eval.py, with rouge 1.0.1, fuzzywuzzy 0.18.0 and
jieba installed):
    python -c "from metrics import rouge_score; print(rouge_score(PRED, REF))"   # likewise for the others
    python eval.py --e --model fixture   # on pred_e/fixture written by longbench_fixtures.write_predictions
"""

from __future__ import annotations

import json

import pytest

from dprope.eval.benchmarks.longbench_e.config import LongBenchConfig
from dprope.eval.benchmarks.longbench_e.metrics import (
    classification,
    classification_fixed,
    code_sim,
    count,
    qa_f1,
    retrieval,
    rouge_l,
)
from dprope.eval.benchmarks.longbench_e.scoring import read_predictions
from dprope.eval.benchmarks.longbench_e.tasks import TASKS
from dprope.eval.suite import EvalConfig, run_suite
from dprope.model import ModelConfig
from tests.eval.longbench_fixtures import TREC_CLASSES, write_predictions
from tests.eval.test_cli import run_cli

# from metrics import rouge_score; rouge_score(pred, ref)
ROUGE = [
    (
        "The cat sat on the mat. It was happy.",
        "the cat is on the mat. it was very happy.",
        0.6666666616666668,
    ),
    (
        "Officials said the dam failed. Repairs will cost $2 million.",
        "The dam failed, officials said. Repairs cost $2 million.",
        0.5263157844875347,
    ),
    ("", "a summary", 0.0),  # the package refuses an empty hypothesis: 0
    (" ".join(["word"] * 1500), " ".join(["word"] * 1500), 0.0),  # RecursionError in its LCS: 0
    ("A B C. D E F.", "A B C D E F.", 0.999999995),
]
# from metrics import code_sim_score; code_sim_score(pred, ref)
CODE = [
    ("x = add(1, 2)", "x = add(1,2)", 0.96),
    ("for i in range(10):", "for j in range(n):", 0.86),
    ("```python\n# sum\nreturn a + b\n", "return a+b", 0.91),
    ("", "x = 1", 0.0),
    ("    self.assertEqual(result, 3)", "self.assertEqual(result, 3)", 0.93),
]
# from metrics import classification_score; classification_score(pred, ref, all_classes=classes)
CLASSIFICATION = [
    ("Arts and crafts", "Arts and crafts", ["Art", "Arts", "Arts and crafts", "Sport"], 0.5),
    ("Location or Human", "Location", ["Location", "Human", "Entity"], 0.5),
    ("Human being", "Human being", ["Human", "Human being", "Entity"], 1.0),
]
# python eval.py --e --model fixture  ->  pred_e/fixture/result.json
OFFICIAL_RESULT = {
    "gov_report": {"0-4k": 51.32, "4-8k": 0.0, "8k+": 81.82},
    "trec": {"0-4k": 25.0, "4-8k": 25.0, "8k+": 50.0},
    "triviaqa": {"0-4k": 58.33, "4-8k": 0.0, "8k+": 100.0},
    "hotpotqa": {"0-4k": 58.33, "4-8k": 0.0, "8k+": 100.0},
    "repobench-p": {"0-4k": 98.0, "4-8k": 39.0, "8k+": 83.0},
    "lcc": {"0-4k": 98.0, "4-8k": 39.0, "8k+": 83.0},
    "multi_news": {"0-4k": 51.32, "4-8k": 0.0, "8k+": 81.82},
    "qasper": {"0-4k": 58.33, "4-8k": 0.0, "8k+": 100.0},
    "samsum": {"0-4k": 51.32, "4-8k": 0.0, "8k+": 100.0},
    "passage_count": {"0-4k": 75.0, "4-8k": 0.0, "8k+": 66.67},
    "passage_retrieval_en": {"0-4k": 50.0, "4-8k": 50.0, "8k+": 100.0},
    "2wikimqa": {"0-4k": 58.33, "4-8k": 0.0, "8k+": 100.0},
    "multifieldqa_en": {"0-4k": 58.33, "4-8k": 0.0, "8k+": 100.0},
}


@pytest.mark.parametrize(("pred", "ref", "expected"), ROUGE)
def test_rouge_l_equals_the_official_function(pred, ref, expected):
    assert rouge_l(pred, ref) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("pred", "ref", "expected"), CODE)
def test_code_sim_equals_the_official_function(pred, ref, expected):
    assert code_sim(pred, ref) == expected


def test_code_sim_uses_difflib_as_the_official_install():
    import difflib

    from dprope.eval.benchmarks.longbench_e.metrics import _fuzz

    assert _fuzz().SequenceMatcher is difflib.SequenceMatcher  # python-Levenshtein would change scores


@pytest.mark.parametrize(("pred", "ref", "classes", "expected"), CLASSIFICATION)
def test_classification_equals_the_official_function(pred, ref, classes, expected):
    assert classification(pred, ref, classes) == expected


def test_classification_fix_removes_every_part_of_the_reference():
    assert (
        classification_fixed("Arts and crafts", "Arts and crafts", ["Art", "Arts", "Arts and crafts"]) == 1.0
    )
    assert classification_fixed("Location or Human", "Location", ["Location", "Human"]) == 0.5


def test_other_metrics_equal_the_official_functions():
    # qa_f1_score("The cat sat", "a cat sat down"), count_score("3, 4, 4 or 5", "4"),
    # retrieval_score("Paragraph 3 or Paragraph 12", "Paragraph 3")
    assert qa_f1("The cat sat", "a cat sat down") == pytest.approx(0.8)
    assert count("3, 4, 4 or 5", "4") == 0.5
    assert retrieval("Paragraph 3 or Paragraph 12", "Paragraph 3") == 0.5


def _rescore(directory, **options):
    settings = EvalConfig(
        tasks=["longbench_e"], longbench_e=LongBenchConfig(predictions_dir=str(directory), **options)
    )
    model = ModelConfig(name="saved", pretrained="/never/read", tokenizer="byte")
    return run_suite(model, settings).benchmarks["longbench_e"]


def test_rescoring_equals_the_official_result_json(tmp_path):
    result = _rescore(write_predictions(tmp_path / "pred"))
    assert result.details["result_json"] == OFFICIAL_RESULT
    assert json.loads(result.files["longbench_e/result.json"]) == OFFICIAL_RESULT
    # averages, by hand from the official numbers: Code Completion = mean(lcc, repobench-p)
    categories = result.details["categories"]
    assert categories["Code Completion"]["4-8k"] == pytest.approx(39.0)
    assert categories["Few-shot Learning"]["0-4k"] == pytest.approx((25.0 + 58.33 + 51.32) / 3)
    by_category = result.details["averages"]["macro over categories"]
    by_dataset = result.details["averages"]["macro over datasets"]
    assert by_category["8k+"] == pytest.approx(sum(c["8k+"] for c in categories.values()) / 6)
    assert by_dataset["8k+"] == pytest.approx(sum(r["8k+"] for r in OFFICIAL_RESULT.values()) / 13)
    assert result.summary == by_category and result.details["summary_is"] == "macro over categories"
    assert _rescore(tmp_path / "pred", average="datasets").summary == by_dataset


def test_classification_fix_changes_only_trec(tmp_path):
    official = _rescore(write_predictions(tmp_path / "pred")).details["datasets"]
    fixed = _rescore(tmp_path / "pred", classification_fix=True).details["datasets"]
    assert official["trec_e"]["0-4k"] == 25.0 and fixed["trec_e"]["0-4k"] == 50.0
    assert {k: v for k, v in official.items() if k != "trec_e"} == {
        k: v for k, v in fixed.items() if k != "trec_e"
    }


def test_oracle_predictions_score_100_through_the_entry_point(tmp_path):
    write_predictions(tmp_path / "oracle", oracle=True)
    proc = run_cli(
        tmp_path / "hydra",
        "eval=longbench_e",
        f"eval.longbench_e.predictions_dir={tmp_path / 'oracle'}",
        f"eval.output_dir={tmp_path / 'out'}",
        "eval.plots=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    benchmark = results["benchmarks"]["longbench_e"]
    assert benchmark["summary"] == {"0-4k": 100.0, "4-8k": 100.0, "8k+": 100.0, "avg": 100.0}
    assert all(row["avg"] == 100.0 for row in benchmark["details"]["datasets"].values())
    assert len(benchmark["details"]["datasets"]) == len(TASKS)
    assert results["model"]["pretrained"] is None  # no model was loaded
    official = json.loads((tmp_path / "out" / "longbench_e" / "result.json").read_text())
    assert set(official) == {name.removesuffix("_e") for name in TASKS}
    assert (tmp_path / "out" / "longbench_e" / "gov_report.jsonl").read_text() == (
        tmp_path / "oracle" / "gov_report.jsonl"
    ).read_text()


def test_trec_classes_fixture_triggers_the_quirk():
    assert classification("Arts and crafts", "Arts and crafts", TREC_CLASSES) == 0.5


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "eval.longbench_e.predictions_dir: no directory at {dir}"),
        ("empty", "eval.longbench_e.predictions_dir: no LongBench-E prediction file in {dir}"),
        ("blank", "eval.longbench_e.predictions_dir: {dir}/trec.jsonl holds no prediction"),
        ("json", "eval.longbench_e.predictions_dir: {dir}/trec.jsonl:2: not valid JSON"),
        ("field", "eval.longbench_e.predictions_dir: {dir}/trec.jsonl:1: missing field 'pred'"),
        ("type", "eval.longbench_e.predictions_dir: {dir}/trec.jsonl:1: field 'length' must be an integer"),
    ],
)
def test_bad_prediction_files_are_refused_with_file_and_line(tmp_path, setup, message):
    directory = tmp_path / "pred"
    good = '{"pred": "Location", "answers": ["Location"], "all_classes": ["Location"], "length": 10}'
    if setup != "missing":
        directory.mkdir()
    content = {
        "blank": "\n",
        "json": good + "\n{oops\n",
        "field": '{"answers": [], "all_classes": null, "length": 1}\n',
        "type": '{"pred": "", "answers": [], "all_classes": null, "length": "1"}\n',
    }
    if setup in content:
        (directory / "trec.jsonl").write_text(content[setup])
    from dprope.config import ConfigError

    with pytest.raises(ConfigError) as err:
        read_predictions(str(directory), list(TASKS))
    assert str(err.value).startswith(message.format(dir=directory))


def test_cli_bad_predictions_dir_is_one_line_before_any_model(tmp_path):
    proc = run_cli(
        tmp_path / "hydra", "eval=longbench_e", f"eval.longbench_e.predictions_dir={tmp_path / 'none'}"
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: eval.longbench_e.predictions_dir: no directory at {tmp_path / 'none'}"]
