"""What the README says of lm-eval's own ruler, longbench and babilong tasks, checked on the
installed lm-eval (a new lm-eval version that changes them fails here)."""

from __future__ import annotations

import importlib

import pytest

from dprope.eval.benchmarks.ruler.scoring import string_match_part
from dprope.eval.harness import lm_eval_task_config


def lm_eval_module(name: str):
    return importlib.import_module(f"lm_eval.tasks.{name}")


def unresolved_config(relative: str) -> dict:
    """A task config of lm-eval with its functions left as names (longbench's need jieba)."""
    from pathlib import Path

    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(Path(lm_eval.tasks.__file__).parent / relative, resolve_func=False)


def test_ruler_qa_metric_gives_partial_credit_where_rulers_gives_full():
    common = lm_eval_module("ruler.common_utils")
    references = ["Paris", "the city of Paris", "Paris, France"]
    assert common.process_results_part({"max_length": 4096, "outputs": references}, ["Paris"])[
        "4096"
    ] == pytest.approx(1 / 3)
    assert string_match_part("Paris", references) == 1.0  # RULER's: any reference found
    assert common.DEFAULT_SEQ_LENGTHS == [4096]


def test_longbench_e_group_leaves_out_summarization_and_synthetic():
    group = unresolved_config("longbench/_longbench_e.yaml")
    assert group["task"] == [
        "longbench_code_e",
        "longbench_fewshot_e",
        "longbench_multi_e",
        "longbench_single_e",
    ]
    for name in ("trec_e", "triviaqa_e", "samsum_e"):
        assert unresolved_config(f"longbench/{name}.yaml")["generation_kwargs"]["until"] == ["\n"]
    assert unresolved_config("longbench/gov_report_e.yaml")["dataset_path"] == "Xnhyacinth/LongBench"


def test_longbench2_is_a_log_likelihood_choice_after_answer():
    config = lm_eval_task_config("longbench2/_longbench_common_yaml")
    assert config["output_type"] == "multiple_choice" and config["doc_to_choice"] == ["A", "B", "C", "D"]
    assert config["doc_to_text"].endswith("\n\nAnswer:")


# (task, target, question, answer, the official BABILong compare_answers on it: booydar/babilong
# 7a6efee babilong/metrics.py, run on these strings)
BABILONG_ANSWERS = [
    ("qa1", "kitchen", "Where is Mary?", "The most recent location of Mary is kitchen.", True),
    (
        "qa1",
        "kitchen",
        "Where is Mary?",
        "The most recent location of Mary is kitchen. Before that, garden.",
        True,
    ),
    ("qa1", "kitchen", "Where is Mary?", "Mary was in the garden, then the kitchen.", False),
    ("qa1", "kitchen", "Where is Mary?", "kitchen or bathroom", False),
    ("qa2", "garden", "Where is the football?", "The football is in the garden.", True),
    ("qa6", "no", "Is Mary in the kitchen?", "No, Mary is not in the kitchen.", True),
    ("qa6", "yes", "Is Mary in the kitchen?", "Yes.", True),
    ("qa6", "no", "Is Mary in the kitchen?", "I do not know", True),
    ("qa7", "two", "How many objects is Mary carrying?", "Mary is carrying two objects: someone.", False),
    ("qa7", "one", "How many objects is Mary carrying?", "none", False),
    ("qa5", "Fred", "Who gave the milk to Bill?", "Fred gave the milk to Bill.", True),
]


def test_babilong_scoring_accepts_what_the_official_refuses():
    """lm-eval's babilong scorer finds the target anywhere: all 11 right, the official 7."""
    common = lm_eval_module("babilong.common_utils")
    lm_eval = [common.process_results({"target": t}, [a])["acc"] for _, t, _, a, _ in BABILONG_ANSWERS]
    assert lm_eval == [1.0] * 11
    assert sum(official for *_, official in BABILONG_ANSWERS) == 7
