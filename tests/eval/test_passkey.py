"""Passkey retrieval: exact prompt length, key position, scoring, and a tiny end-to-end run."""

from __future__ import annotations

import pytest

from dprope.config import ConfigError
from dprope.eval.common import EvalContext
from dprope.eval.passkey import (
    FILLER,
    KEY_LINE,
    QUESTION,
    TASK_DESCRIPTION,
    PasskeyConfig,
    PasskeyPromptBuilder,
    is_correct,
    prepare_passkey,
)


@pytest.mark.parametrize("length", [300, 333, 512, 1000])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_prompt_has_exact_length_and_key_at_depth(byte_tokenizer, length, depth):
    builder = PasskeyPromptBuilder(byte_tokenizer)
    prompt = builder.build(length, depth, "12345")
    assert len(prompt.input_ids) == length
    budget = length - builder.fixed_length("12345")
    assert prompt.key_start == len(builder.head) + round(depth * budget)
    key_text = byte_tokenizer.decode(prompt.input_ids[prompt.key_start : prompt.key_end])
    assert key_text == "\n" + KEY_LINE.format(key="12345") + "\n"
    text = byte_tokenizer.decode(prompt.input_ids, skip_special_tokens=True)
    assert text.startswith(
        TASK_DESCRIPTION + "\n" + FILLER[:10] if depth > 0 else TASK_DESCRIPTION + "\n\nThe pass key"
    )
    assert text.endswith("\n" + QUESTION)


def test_filler_is_the_template_sentences_repeated(byte_tokenizer):
    builder = PasskeyPromptBuilder(byte_tokenizer)
    prompt = builder.build(800, 0.5, "54321")
    text = byte_tokenizer.decode(prompt.input_ids, skip_special_tokens=True)
    before, after = text.split("\n")[1], text.split("\n")[3]
    repeated = " ".join([FILLER] * 20)
    assert len(before) > 2 * len(FILLER) and before == repeated[: len(before)]
    assert after == repeated[: len(after)]  # both sides start at the top of the filler, cut at a token


def test_prompt_shorter_than_the_template_is_refused(byte_tokenizer):
    with pytest.raises(ConfigError, match="eval.passkey.lengths: 100 is shorter"):
        PasskeyPromptBuilder(byte_tokenizer).build(100, 0.5, "12345")


def test_lengths_beyond_max_positions_are_refused_unless_allowed(byte_tokenizer):
    cfg = PasskeyConfig(lengths=[300, 600], depths=[0.5], trials=1)
    with pytest.raises(
        ConfigError, match="eval.passkey.lengths: 600 exceeds .* max_position_embeddings \\(512\\)"
    ):
        prepare_passkey(cfg, byte_tokenizer, EvalContext(max_positions=512))
    prompts = prepare_passkey(
        cfg, byte_tokenizer, EvalContext(max_positions=512, allow_beyond_max_position=True)
    )
    assert [len(p.input_ids) for p in prompts] == [300, 600]


def test_grid_is_lengths_x_depths_x_trials_with_seeded_5_digit_keys(byte_tokenizer):
    cfg = PasskeyConfig(lengths=[300, 400], depths=[0.0, 1.0], trials=3)
    prompts = prepare_passkey(cfg, byte_tokenizer, EvalContext(max_positions=1024, seed=7))
    assert len(prompts) == 12
    assert all(len(p.key) == 5 and p.key.isdigit() for p in prompts)
    again = prepare_passkey(cfg, byte_tokenizer, EvalContext(max_positions=1024, seed=7))
    assert [p.key for p in prompts] == [p.key for p in again]


@pytest.mark.parametrize(
    ("answer", "correct"),
    [(" 12345.", True), ("12345 is", True), (" 1234", False), (" the key 99 12345", False), ("", False)],
)
def test_first_integer_decides(answer, correct):
    assert is_correct(answer, "12345") is correct


@pytest.mark.parametrize(("field", "value"), [("lengths", []), ("depths", [1.5]), ("trials", 0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"^{field}"):
        PasskeyConfig(**{field: value})


def test_end_to_end_on_the_tiny_model(tiny_eval_model):
    from dprope.eval.suite import EvalConfig, run_suite

    settings = EvalConfig(
        tasks=["passkey"],
        batch_size=8,
        progress=False,
        passkey=PasskeyConfig(lengths=[300, 512], depths=[0.0, 0.5, 1.0], trials=2),
    )
    report = run_suite(tiny_eval_model, settings)
    result = report.benchmarks["passkey"]
    assert set(result.summary) == {"300", "512", "avg"}
    assert all(0.0 <= v <= 100.0 for v in result.summary.values())
    assert len(result.details["accuracy"]) == 2 and len(result.details["accuracy"][0]) == 3
    assert len(result.samples) == 12
    assert report.model["max_position_embeddings"] == 1024
