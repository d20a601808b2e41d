"""RULER subset: length fitting, task content, seeding, scoring, and a tiny end-to-end run."""

from __future__ import annotations

import pytest

from dprope.config import ConfigError
from dprope.eval.common import EvalContext
from dprope.eval.ruler import RulerConfig, build_samples, fit_units, prepare_ruler
from dprope.eval.ruler_tasks import TASKS, string_match_all

SMALL = {"num_needles": 2, "cwe_words": 3, "cwe_common_freq": 4, "cwe_uncommon_freq": 1, "num_samples": 2}


def test_fit_units_is_the_largest_that_fits():
    def cost(n: int) -> int:
        return 40 + 7 * n

    assert fit_units(cost, 40 + 7 * 12 + 6) == 12
    assert fit_units(cost, 40 + 7 * 12 + 6, hint=12) == 12
    assert fit_units(cost, 40 + 7 * 12 + 6, hint=3) == 12  # a wrong hint falls back to the search
    assert fit_units(cost, 39) == -1


@pytest.mark.parametrize("task", list(TASKS))
def test_prompts_fit_the_length_tightly_and_hold_the_answers(byte_tokenizer, task):
    cfg = RulerConfig(tasks=[task], lengths=[900], max_new_tokens=20, **SMALL)
    for sample in build_samples(task, 900, cfg, byte_tokenizer, seed=1):
        budget = 900 - 20
        assert budget - 40 < len(sample.input_ids) <= budget  # whole sentences / words: a short tail
        text = byte_tokenizer.decode(sample.input_ids, skip_special_tokens=True)
        assert sample.answers and all(a in text for a in sample.answers)


def test_task_content(byte_tokenizer):
    cfg = RulerConfig(lengths=[900], **SMALL)
    answers = {task: build_samples(task, 900, cfg, byte_tokenizer, seed=3)[0].answers for task in TASKS}
    assert len(answers["niah_single"]) == 1 and len(answers["niah_multikey"]) == 1
    assert len(answers["niah_multivalue"]) == 2 and len(answers["niah_multiquery"]) == 2
    assert all(len(a) == 7 and a.isdigit() for a in answers["niah_multivalue"])
    assert len(answers["vt"]) == cfg.vt_hops + 1 and all(len(v) == 5 and v.isupper() for v in answers["vt"])
    sample = build_samples("cwe", 900, cfg, byte_tokenizer, seed=3)[0]
    text = byte_tokenizer.decode(sample.input_ids, skip_special_tokens=True)
    listed = [line.split(". ", 1)[1] for line in text.split("\n") if line[:1].isdigit()]
    assert all(listed.count(w) == cfg.cwe_common_freq for w in sample.answers)
    assert max(listed.count(w) for w in set(listed) - set(sample.answers)) == cfg.cwe_uncommon_freq


def test_same_seed_same_samples(byte_tokenizer):
    cfg = RulerConfig(tasks=["niah_multikey"], lengths=[900], **SMALL)
    first = prepare_ruler(cfg, byte_tokenizer, EvalContext(max_positions=1024, seed=5))
    again = prepare_ruler(cfg, byte_tokenizer, EvalContext(max_positions=1024, seed=5))
    other = prepare_ruler(cfg, byte_tokenizer, EvalContext(max_positions=1024, seed=6))
    assert [s.input_ids for s in first] == [s.input_ids for s in again]
    assert [s.answers for s in first] != [s.answers for s in other]


def test_string_match_all():
    assert string_match_all("The numbers are 123 and 456.", ["123", "456"]) == 1.0
    assert string_match_all("only 123", ["123", "456"]) == 0.5
    assert string_match_all("ABCDE, fghij", ["abcde", "FGHIJ", "KLMNO"]) == pytest.approx(2 / 3)


def test_bad_settings_name_the_field(byte_tokenizer):
    with pytest.raises(ConfigError, match=r"^tasks\[0\]: unknown RULER task 'qa'"):
        RulerConfig(tasks=["qa"])
    with pytest.raises(ConfigError, match="^cwe_common_freq"):
        RulerConfig(cwe_common_freq=3, cwe_uncommon_freq=3)
    with pytest.raises(ConfigError, match="eval.ruler.lengths: 2048 exceeds"):
        prepare_ruler(RulerConfig(lengths=[2048], **SMALL), byte_tokenizer, EvalContext(max_positions=1024))
    with pytest.raises(ConfigError, match="eval.ruler.lengths: 200 leaves no room for a niah_single prompt"):
        prepare_ruler(RulerConfig(lengths=[200], **SMALL), byte_tokenizer, EvalContext(max_positions=1024))


def test_end_to_end_on_the_tiny_model(tiny_eval_model):
    from dprope.eval.suite import EvalConfig, run_suite

    ruler = RulerConfig(lengths=[768, 1024], max_new_tokens=8, **SMALL)
    result = run_suite(
        tiny_eval_model, EvalConfig(tasks=["ruler"], batch_size=4, progress=False, ruler=ruler)
    ).benchmarks["ruler"]
    assert list(result.summary) == ["768", "1024", "avg"]
    assert set(result.details["scores"]) == set(TASKS)
    assert len(result.samples) == len(TASKS) * 2 * 2
