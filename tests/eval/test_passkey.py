"""Passkey retrieval: the prompt string against the original generator, lengths, the random and grid
draws, scoring, and a tiny end-to-end run."""

from __future__ import annotations

import hashlib
import random

import pytest

from dprope.config import ConfigError
from dprope.eval.benchmarks.passkey.config import PasskeyConfig
from dprope.eval.benchmarks.passkey.prompts import (
    FILLER,
    KEY_LINE,
    QUESTION,
    TASK_DESCRIPTION,
    PasskeyPromptBuilder,
    prepare_passkey,
    prompt_text,
)
from dprope.eval.benchmarks.passkey.scoring import is_correct
from dprope.eval.common import EvalContext

# The YaRN repository's eval/passkey.py generate_prompt(n_garbage) after random.seed(seed):
# (seed, n_garbage, pass key, sha256 of the prompt string it returns)
ORIGINAL = [
    (0, 500, 25248, "7f589b9c77f0e34f68e296b4d8794cc55f133ae9a72d4b1e131f41734c916278"),
    (3, 4000, 38840, "acf398b0fd699e8a4327e0893cb2f83a946161a363f6be861bdec9250ecb255c"),
]


@pytest.mark.parametrize(("seed", "garbage", "key", "sha256"), ORIGINAL)
def test_prompt_string_equals_the_original_generator(seed, garbage, key, sha256):
    rng = random.Random(seed)
    before = rng.randint(0, garbage)  # the original draws the split point, then the key
    drawn = rng.randint(1, 50000)
    assert drawn == key
    text = prompt_text(str(drawn), before, garbage - before)
    assert hashlib.sha256(text.encode()).hexdigest() == sha256


@pytest.mark.parametrize("length", [300, 333, 512, 1000])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_grid_prompt_fills_the_length_with_the_key_at_depth(byte_tokenizer, length, depth):
    builder = PasskeyPromptBuilder(byte_tokenizer)
    prompt = builder.build_at_depth(length, depth, "12345")
    assert len(prompt.input_ids) == length  # one byte per token: exactly T
    text = byte_tokenizer.decode(prompt.input_ids, skip_special_tokens=True)
    assert text == prompt.text
    lines = text.split("\n")
    assert lines[0] == TASK_DESCRIPTION and lines[2] == KEY_LINE.format(key="12345") and lines[4] == QUESTION
    assert len(lines[1]) == round(depth * prompt.filler_chars)
    assert len(lines[1]) + len(lines[3]) == prompt.filler_chars


def test_filler_is_the_template_sentences_repeated(byte_tokenizer):
    prompt = PasskeyPromptBuilder(byte_tokenizer).build_at_depth(800, 0.5, "54321")
    before, after = prompt.text.split("\n")[1], prompt.text.split("\n")[3]
    repeated = " ".join([FILLER] * 20)
    assert len(before) > 2 * len(FILLER) and before == repeated[: len(before)]
    assert after == repeated[: len(after)]  # both sides start at the top of the filler, cut at a character


def test_one_string_tokenized_once_with_a_subword_tokenizer(tmp_path):
    """A BPE tokenizer merges across the newlines of the template: the prompt is the string's own
    tokenization (no piecewise joins), within the target length and as long as it can be."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>"])
    bpe.train_from_iterator([prompt_text("12345", 300, 200)] * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", unk_token="<unk>")
    tokenizer.add_bos_token = True
    builder = PasskeyPromptBuilder(tokenizer)
    prompt = builder.build_at_depth(200, 0.5, "12345")
    assert prompt.input_ids == builder.encode(prompt.text) and len(prompt.input_ids) <= 200
    longer = builder.build(200, "12345", round(0.5 * (prompt.filler_chars + 1)), prompt.filler_chars + 1)
    assert len(longer.input_ids) > 200  # one more filler character no longer fits


def test_prompt_shorter_than_the_template_is_refused(byte_tokenizer):
    with pytest.raises(ConfigError, match="eval.passkey.lengths: 100 is shorter"):
        PasskeyPromptBuilder(byte_tokenizer).build_at_depth(100, 0.5, "12345")


def test_lengths_beyond_max_positions_are_refused_unless_allowed(byte_tokenizer):
    cfg = PasskeyConfig(lengths=[300, 600], trials=1)
    with pytest.raises(
        ConfigError, match="eval.passkey.lengths: 600 exceeds .* max_position_embeddings \\(512\\)"
    ):
        prepare_passkey(cfg, byte_tokenizer, EvalContext(max_positions=512))
    prompts = prepare_passkey(
        cfg, byte_tokenizer, EvalContext(max_positions=512, allow_beyond_max_position=True)
    )
    assert [p.length for p in prompts] == [300, 600] and all(len(p.input_ids) <= p.length for p in prompts)


def test_random_sampling_draws_keys_and_split_points_as_the_original(byte_tokenizer):
    cfg = PasskeyConfig(lengths=[400], trials=40)
    prompts = prepare_passkey(cfg, byte_tokenizer, EvalContext(max_positions=1024, seed=7))
    rng = random.Random(7)
    for prompt in prompts:  # the same draws, in the same order, as the original generator
        before = rng.randint(0, prompt.filler_chars)
        assert prompt.key == str(rng.randint(1, 50000))
        assert len(prompt.text.split("\n")[1]) == before
    assert len({p.filler_chars for p in prompts}) == 1  # G is one number per length, as the original
    assert all(len(p.input_ids) <= 400 for p in prompts) and max(len(p.input_ids) for p in prompts) == 400
    depths = [p.depth for p in prompts]
    assert min(depths) < 0.2 and max(depths) > 0.8  # spread over the whole filler


def test_grid_is_lengths_x_depths_x_trials_with_seeded_keys(byte_tokenizer):
    cfg = PasskeyConfig(lengths=[300, 400], sampling="grid", depths=[0.0, 1.0], trials=3)
    prompts = prepare_passkey(cfg, byte_tokenizer, EvalContext(max_positions=1024, seed=7))
    assert len(prompts) == 12
    assert all(1 <= int(p.key) <= 50000 for p in prompts)
    again = prepare_passkey(cfg, byte_tokenizer, EvalContext(max_positions=1024, seed=7))
    assert [p.key for p in prompts] == [p.key for p in again]


@pytest.mark.parametrize(
    ("answer", "correct"),
    [(" 12345.", True), ("12345 is", True), (" 1234", False), (" the key 99 12345", False), ("", False)],
)
def test_first_integer_decides(answer, correct):
    assert is_correct(answer, "12345") is correct


@pytest.mark.parametrize(
    ("field", "value"), [("lengths", []), ("depths", [1.5]), ("trials", 0), ("sampling", "fixed")]
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"^{field}"):
        PasskeyConfig(**{field: value})


def test_end_to_end_on_the_tiny_model(tiny_eval_model):
    from dprope.eval.suite import EvalConfig, run_suite

    settings = EvalConfig(
        tasks=["passkey"],
        batch_size=8,
        progress=False,
        passkey=PasskeyConfig(lengths=[300, 512], sampling="grid", depths=[0.0, 0.5, 1.0], trials=2),
    )
    report = run_suite(tiny_eval_model, settings)
    result = report.benchmarks["passkey"]
    assert set(result.summary) == {"300", "512", "avg"}
    assert all(0.0 <= v <= 100.0 for v in result.summary.values())
    assert len(result.details["accuracy"]) == 2 and len(result.details["accuracy"][0]) == 3
    assert len(result.samples) == 12
    assert report.model["max_position_embeddings"] == 1024
