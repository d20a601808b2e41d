"""LongBench-E: metrics against hand-computed values, truncation, buckets, data validation, and
all 13 datasets end to end on the tiny model over local jsonl fixtures."""

from __future__ import annotations

import json

import pytest

from dprope.config import ConfigError
from dprope.eval.benchmarks.longbench_e.config import LongBenchConfig
from dprope.eval.benchmarks.longbench_e.data import middle_truncate, prepare_longbench, read_local
from dprope.eval.benchmarks.longbench_e.metrics import (
    classification,
    code_sim,
    count,
    normalize_answer,
    qa_f1,
    retrieval,
    rouge_l,
    score_sample,
)
from dprope.eval.benchmarks.longbench_e.scoring import bucket_scores, macro
from dprope.eval.benchmarks.longbench_e.tasks import TASKS, length_bucket
from dprope.eval.common import EvalContext


def test_thirteen_english_tasks_with_official_lengths_and_metrics():
    assert len(TASKS) == 13
    assert {n: (t.max_new_tokens, t.metric) for n, t in TASKS.items()} == {
        "qasper_e": (128, "qa_f1"),
        "multifieldqa_en_e": (64, "qa_f1"),
        "hotpotqa_e": (32, "qa_f1"),
        "2wikimqa_e": (32, "qa_f1"),
        "gov_report_e": (512, "rouge_l"),
        "multi_news_e": (512, "rouge_l"),
        "trec_e": (64, "classification"),
        "triviaqa_e": (32, "qa_f1"),
        "samsum_e": (128, "rouge_l"),
        "passage_count_e": (32, "count"),
        "passage_retrieval_en_e": (32, "retrieval"),
        "lcc_e": (64, "code_sim"),
        "repobench-p_e": (64, "code_sim"),
    }
    assert all("{context}" in t.prompt for t in TASKS.values())


def test_qa_f1_by_hand():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    # pred {cat, sat}, reference {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
    assert qa_f1("The cat sat", "a cat sat down") == pytest.approx(0.8)
    # pred {paris, france, paris}, reference {paris}: common 1, P = 1/3, R = 1, F1 = 0.5
    assert qa_f1("Paris, France, Paris", "Paris") == pytest.approx(0.5)
    assert qa_f1("London", "Paris") == 0.0


def test_rouge_l_by_hand():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert rouge_l("The Cat", "the cat") == 0.0  # the official `rouge` package keeps case
    assert rouge_l("dog", "the cat") == 0.0


def test_classification_by_hand():
    classes = ["Location", "Human", "Entity", "Human being"]
    assert classification("Location", "Location", classes) == 1.0
    assert classification("Location or Human", "Location", classes) == 0.5
    assert classification("Entity", "Location", classes) == 0.0
    # "Human" is part of the reference "Human being": not counted against it
    assert classification("Human being", "Human being", classes) == 1.0


def test_retrieval_and_count_by_hand():
    assert retrieval("Paragraph 3", "Paragraph 3") == 1.0
    assert retrieval("Paragraph 3 or Paragraph 12", "Paragraph 3") == 0.5
    assert retrieval("I do not know", "Paragraph 3") == 0.0
    assert count("There are 4 unique paragraphs", "4") == 1.0
    assert count("3, 4, 4 or 5", "4") == 0.5
    assert count("none", "4") == 0.0


def test_code_sim_by_hand():
    # the first line without a comment or a code fence is compared
    assert code_sim("```python\n# add them\nx = add(1, 2)\n", "x = add(1, 2)") == 1.0
    # difflib ratio: 2 x 3 matching characters / 8 = 0.75, an integer percentage
    assert code_sim("abcd", "abce") == pytest.approx(0.75)


def test_a_sample_scores_its_best_reference():
    # "the town of Brill" normalises to 3 tokens: P = 1, R = 1/3, F1 = 0.5; "Alder" scores 0
    assert score_sample("qa_f1", "Brill", ["Alder", "the town of Brill"], None) == pytest.approx(0.5)
    assert score_sample("qa_f1", "Brill", [], None) == 0.0


def test_middle_truncation_keeps_both_ends_exactly():
    ids = list(range(100))
    assert middle_truncate(ids, 10) == [0, 1, 2, 3, 4, 95, 96, 97, 98, 99]
    assert middle_truncate(ids, 7) == [0, 1, 2, 96, 97, 98, 99]
    assert middle_truncate(ids, 100) == ids


def test_buckets_by_the_length_field():
    assert [length_bucket(n) for n in (0, 3999, 4000, 7999, 8000, 50000)] == [
        "0-4k",
        "0-4k",
        "4-8k",
        "4-8k",
        "8k+",
        "8k+",
    ]
    row = bucket_scores([(100, 1.0), (200, 0.0), (5000, 0.5), (9000, 1.0), (9500, 0.0), (9900, 0.0)])
    assert row == {
        "0-4k": 50.0,
        "4-8k": 50.0,
        "8k+": 33.33,
        "avg": pytest.approx(133.33 / 3),
    }  # rounded as official
    empty = bucket_scores([(100, 1.0)])
    assert empty["4-8k"] != empty["4-8k"] and empty["avg"] == 100.0  # NaN bucket left out of avg
    table = macro([row, {"0-4k": 0.0, "4-8k": float("nan"), "8k+": 50.0, "avg": 25.0}])
    assert table == pytest.approx({"0-4k": 25.0, "4-8k": 50.0, "8k+": 41.665, "avg": (25 + 50 + 41.665) / 3})


def test_prompts_are_filled_and_truncated_to_the_budget(longbench_dir, byte_tokenizer):
    cfg = LongBenchConfig(datasets=["hotpotqa_e", "lcc_e"], data_dir=str(longbench_dir), max_length=120)
    prepared = prepare_longbench(cfg, byte_tokenizer, EvalContext(max_positions=1024))
    assert all(len(s.input_ids) == 120 for s in prepared["hotpotqa_e"])  # truncated
    assert all(len(s.input_ids) < 120 for s in prepared["lcc_e"])  # short enough already
    text = byte_tokenizer.decode(prepared["hotpotqa_e"][0].input_ids, skip_special_tokens=True)
    assert text.startswith("Answer the question based on the given passages.") and text.endswith("Answer:")
    default = prepare_longbench(
        LongBenchConfig(datasets=["hotpotqa_e"], data_dir=str(longbench_dir)),
        byte_tokenizer,
        EvalContext(600),
    )
    # official rule: 1000 tokens per 1024 of context, minus 500: 600 * 1000 // 1024 - 500 = 85
    assert {len(s.input_ids) for s in default["hotpotqa_e"]} == {85}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"input": "q", "context": "c", "length": 5}', "missing field 'answers'"),
        ('{"input": "q", "context": "c", "answers": "a", "length": 5}', "field 'answers' must be a list"),
        ('{"input": "q", "context": "c", "answers": ["a"], "length": "5"}', "field 'length' must be a int"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_lines_are_refused_with_their_location(tmp_path, line, message):
    (tmp_path / "trec_e.jsonl").write_text(line + "\n")
    with pytest.raises(ConfigError, match=f"eval.longbench_e.data_dir: .*trec_e.jsonl:1: {message}"):
        read_local(str(tmp_path), "trec_e")


def test_missing_file_and_unknown_dataset(tmp_path):
    with pytest.raises(ConfigError, match="eval.longbench_e.data_dir: no qasper_e.jsonl"):
        read_local(str(tmp_path), "qasper_e")
    with pytest.raises(ConfigError, match=r"^datasets\[1\]: unknown LongBench-E dataset 'narrativeqa'"):
        LongBenchConfig(datasets=["qasper_e", "narrativeqa"])


def test_end_to_end_all_datasets_on_the_tiny_model_and_rescoring_gives_the_same(
    tiny_eval_model, longbench_dir, tmp_path
):
    from dprope.eval.benchmarks import BENCHMARKS
    from dprope.eval.suite import EvalConfig, run_suite

    settings = EvalConfig(
        tasks=["longbench_e"],
        batch_size=4,
        progress=False,
        longbench_e=LongBenchConfig(data_dir=str(longbench_dir), max_new_tokens=4),
    )
    result = run_suite(tiny_eval_model, settings).benchmarks["longbench_e"]
    assert list(result.summary) == ["0-4k", "4-8k", "8k+", "avg"]
    assert set(result.details["datasets"]) == set(TASKS)
    assert len(result.samples) == 3 * 13
    assert {s["bucket"] for s in result.samples} == {"0-4k", "4-8k", "8k+"}
    assert all(0.0 <= s["score"] <= 1.0 for s in result.samples)
    assert (
        "| **macro over categories** |" in result.markdown
        and "| **macro over datasets** |" in result.markdown
    )
    json.dumps(result.samples)
    figures = BENCHMARKS["longbench_e"].plot(result, "tiny", tmp_path)
    assert [p.name for p in figures] == ["longbench_e.png", "longbench_e_datasets.png"]

    # the official files written by the run, re-scored without a model: the same result
    for relative, text in result.files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    assert (tmp_path / "longbench_e" / "gov_report.jsonl").is_file()
    rescore = EvalConfig(
        tasks=["longbench_e"], longbench_e=LongBenchConfig(predictions_dir=str(tmp_path / "longbench_e"))
    )
    model = tiny_eval_model.__class__(
        name="tiny", pretrained="/no/such/model", tokenizer="byte"
    )  # never read
    again = run_suite(model, rescore).benchmarks["longbench_e"]
    assert again.summary == result.summary and again.samples == result.samples
    assert {k: v for k, v in again.details.items() if k != "rescored_from"} == {
        k: v for k, v in result.details.items() if k != "rescored_from"
    }
    assert again.files == result.files


def test_budget_reproduces_the_official_model2maxlen_table():
    from dprope.eval.benchmarks.longbench_e.data import prompt_budget

    # config/model2maxlen.json: llama2-7b-chat-4k 3500, xgen-7b-8k 7500, vicuna-v1.5-7b-16k 15500, longchat 32k 31500
    table = {4096: 3500, 8192: 7500, 16384: 15500, 32768: 31500}
    assert {n: prompt_budget(LongBenchConfig(), EvalContext(n)) for n in table} == table
    assert prompt_budget(LongBenchConfig(reserve_tokens=100), EvalContext(4096)) == 3900
    assert prompt_budget(LongBenchConfig(max_length=1234), EvalContext(4096)) == 1234


def test_chat_template_wraps_the_cut_prompt_but_not_few_shot_or_code(longbench_dir, byte_tokenizer):
    import copy

    tokenizer = copy.deepcopy(byte_tokenizer)
    tokenizer.chat_template = "[INST]{{ messages[0]['content'] }}[/INST]"  # the official llama2 wrapping
    cfg = LongBenchConfig(datasets=["hotpotqa_e", "trec_e"], data_dir=str(longbench_dir))
    prepared = prepare_longbench(cfg, tokenizer, EvalContext(1024, chat_template=True))  # eval.chat_template
    chat = tokenizer.decode(prepared["hotpotqa_e"][0].input_ids)
    assert chat.startswith("[INST]Answer the question") and chat.endswith("Answer:[/INST]")
    assert "[INST]" not in tokenizer.decode(prepared["trec_e"][0].input_ids)
    plain = prepare_longbench(
        LongBenchConfig(datasets=["hotpotqa_e"], data_dir=str(longbench_dir)), tokenizer, EvalContext(1024)
    )
    assert "[INST]" not in tokenizer.decode(plain["hotpotqa_e"][0].input_ids)  # off by default
