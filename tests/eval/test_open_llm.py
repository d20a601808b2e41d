"""The lm-eval bridge, on a local multiple-choice task defined over jsonl files written here."""

from __future__ import annotations

import json

import pytest

from dprope.config import ConfigError
from dprope.eval.benchmarks.open_llm import prepare_open_llm
from dprope.eval.benchmarks.open_llm.config import OpenLLMConfig
from dprope.eval.common import EvalContext
from dprope.eval.harness import LmEvalTask, task_score

TASK_YAML = """\
task: tiny_arith
dataset_path: json
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
training_split: train
test_split: test
fewshot_split: train
output_type: multiple_choice
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm-eval-tasks")
    for split, count in (("train", 4), ("test", 6)):
        rows = [
            {"question": f"{i} + 1 =", "choices": [str(i + 1), str(i + 2), str(i + 3)], "label": 0}
            for i in range(count)
        ]
        (path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "tiny_arith.yaml").write_text(
        TASK_YAML.format(train=path / "train.jsonl", test=path / "test.jsonl")
    )
    # a second task over the same files: lm-eval's `include` reuses a task file
    (path / "tiny_arith_more.yaml").write_text("include: tiny_arith.yaml\ntask: tiny_arith_more\n")
    return path


def test_paper_settings_by_default():
    assert [(t.name, t.num_fewshot, t.metric, t.subtask_mean) for t in OpenLLMConfig().tasks] == [
        ("truthfulqa_mc2", 0, "acc", False),
        ("hellaswag", 0, "acc_norm", False),  # the paper's 0-shot, not the leaderboard's 10
        ("mmlu", 5, "acc", True),
        ("arc_challenge", 25, "acc_norm", False),
    ]
    assert OpenLLMConfig().fewshot_seed == 1234  # lm-eval's default


def test_subtask_mean_is_unweighted_over_the_leaves():
    # lm-eval's group score weighs subjects by size: (0.5 x 100 + 1.0 x 300) / 400 = 0.875
    results = {
        "results": {
            "mmlu": {"acc,none": 0.875, "acc_stderr,none": 0.01},
            "mmlu_stem": {"acc,none": 0.75},
            "mmlu_algebra": {"acc,none": 0.5},
            "mmlu_physics": {"acc,none": 1.0},
            "mmlu_law": {"acc,none": 1.0},
        },
        "group_subtasks": {"mmlu": ["mmlu_stem", "mmlu_law"], "mmlu_stem": ["mmlu_algebra", "mmlu_physics"]},
    }
    assert task_score(results, LmEvalTask("mmlu", 5, "acc", subtask_mean=True), "eval.open_llm.tasks[0]") == (
        pytest.approx(250 / 3),
        None,
    )
    assert task_score(results, LmEvalTask("mmlu", 5, "acc"), "eval.open_llm.tasks[0]") == (
        pytest.approx(87.5),
        pytest.approx(1.0),
    )


def test_unknown_task_and_missing_metric_name_the_field(task_dir):
    cfg = OpenLLMConfig(
        tasks=[LmEvalTask("no_such_task")], include_path=str(task_dir), include_defaults=False
    )
    with pytest.raises(
        ConfigError, match=r"eval.open_llm.tasks\[0\].name: unknown lm-eval task 'no_such_task'"
    ):
        prepare_open_llm(cfg, EvalContext(max_positions=1024))
    with pytest.raises(ConfigError, match=r"eval.open_llm.tasks\[0\].metric: tiny_arith reports no 'f1'"):
        task_score(
            {"results": {"tiny_arith": {"acc,none": 0.5}}},
            LmEvalTask("tiny_arith", 0, "f1"),
            "eval.open_llm.tasks[0]",
        )
    with pytest.raises(ConfigError, match="eval.open_llm.include_path: no directory"):
        prepare_open_llm(
            OpenLLMConfig(include_path=str(task_dir / "missing")), EvalContext(max_positions=1024)
        )
    with pytest.raises(ConfigError, match="^include_path: must be set"):
        OpenLLMConfig(include_defaults=False)
    with pytest.raises(ConfigError, match=r"^tasks\[1\].name: 'mmlu' is listed twice"):
        OpenLLMConfig(tasks=[LmEvalTask("mmlu"), LmEvalTask("mmlu", 5)])


def test_end_to_end_local_task_with_few_shot(tiny_eval_model, task_dir):
    from dprope.eval.suite import EvalConfig, run_suite

    tasks = [LmEvalTask("tiny_arith", 0, "acc"), LmEvalTask("tiny_arith_more", 2, "acc_norm")]
    cfg = OpenLLMConfig(tasks=tasks, include_path=str(task_dir), include_defaults=False, bootstrap_iters=0)
    result = run_suite(
        tiny_eval_model, EvalConfig(tasks=["open_llm"], batch_size=4, progress=False, open_llm=cfg)
    )
    open_llm = result.benchmarks["open_llm"]
    assert list(open_llm.summary) == ["tiny_arith", "tiny_arith_more", "avg"]
    assert all(0.0 <= v <= 100.0 for v in open_llm.summary.values())
    assert open_llm.details["tasks"]["tiny_arith_more"]["num_fewshot"] == 2
    assert (
        "| tiny_arith | 0 | acc |" in open_llm.markdown
        and "| tiny_arith_more | 2 | acc_norm |" in open_llm.markdown
    )
