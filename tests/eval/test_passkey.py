"""Passkey retrieval: the prompt string against the original generator, lengths, the random and grid
draws, scoring, and end-to-end runs on the tiny model whose answers are controlled, so that the
score grid is known."""

from __future__ import annotations

import hashlib
import random
import re

import pytest

from dprope.config import ConfigError
from dprope.eval.benchmarks.passkey import BENCHMARK
from dprope.eval.benchmarks.passkey.config import PasskeyConfig, default_lengths
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
def test_exact_grid_prompt_fills_the_length_with_the_key_at_depth(byte_tokenizer, length, depth):
    builder = PasskeyPromptBuilder(byte_tokenizer, sizing="exact")
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


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A small byte-level BPE trained on the template: merges across words and newlines."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>"])
    bpe.train_from_iterator([prompt_text("12345", 300, 200)] * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", unk_token="<unk>")
    tokenizer.add_bos_token = True
    return tokenizer


def test_one_string_tokenized_once_with_a_subword_tokenizer(bpe_tokenizer):
    """A BPE tokenizer merges across the newlines of the template: the prompt is the string's own
    tokenization (no piecewise joins). Exact sizing: within the target length and as long as it
    can be; original sizing: strictly under it, in whole steps of 128 characters."""
    builder = PasskeyPromptBuilder(bpe_tokenizer, sizing="exact")
    prompt = builder.build_at_depth(200, 0.5, "12345")
    assert prompt.input_ids == builder.encode(prompt.text) and len(prompt.input_ids) <= 200
    longer = builder.build(200, "12345", round(0.5 * (prompt.filler_chars + 1)), prompt.filler_chars + 1)
    assert len(longer.input_ids) > 200  # one more filler character no longer fits
    builder = PasskeyPromptBuilder(bpe_tokenizer)
    prompt = builder.build_at_depth(200, 0.5, "12345")
    assert len(prompt.input_ids) < 200 and prompt.filler_chars % 128 == 0 and prompt.filler_chars > 0
    chars = prompt.filler_chars + 128
    assert (
        len(builder.build(200, "12345", round(0.5 * chars), chars).input_ids) >= 200
    )  # one more step does not fit


def original_generator(seed: int, targets: list[int], iterations: int, count) -> list[tuple[str, int]]:
    """The YaRN repository's eval/passkey.py main loop after random.seed(seed), written out here
    with its generate_prompt (whose string the sha256 test above checks): the filler of each
    target found in 128-character steps from the previous one, each step measured on a freshly
    drawn prompt, keeping the last size under the target; then the test prompts."""
    rng = random.Random(seed)

    def generate_prompt(n_garbage):
        prefix = rng.randint(0, n_garbage)
        key = rng.randint(1, 50000)
        return prompt_text(str(key), prefix, n_garbage - prefix), key

    lengths, last_n = [], 0
    for target in targets:
        num_tokens, n = 0, last_n
        while num_tokens < target:
            last_n = n
            n += 128
            num_tokens = count(generate_prompt(n)[0])
        lengths.append(last_n)
    return [generate_prompt(length) for length in lengths for _ in range(iterations)]


@pytest.mark.parametrize("tokenizer_name", ["byte_tokenizer", "bpe_tokenizer"])
def test_original_sizing_reproduces_the_original_prompts(request, tokenizer_name):
    """Default settings: the original's sizing and draws, prompt for prompt, from the same seed."""
    tokenizer = request.getfixturevalue(tokenizer_name)
    targets = [300, 700, 1000]

    def count(text):
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])

    expected = original_generator(11, targets, 6, count)
    prompts = prepare_passkey(PasskeyConfig(lengths=targets, trials=6), tokenizer, EvalContext(1024, seed=11))
    assert [(p.text, int(p.key)) for p in prompts] == expected
    assert all(len(p.input_ids) < p.length for p in prompts)  # strictly under the target
    assert all(p.filler_chars % 128 == 0 for p in prompts)


def test_original_sizing_is_the_last_step_under_the_target(byte_tokenizer):
    """Byte tokenizer, one token per character: G is the largest multiple of 128 that keeps the
    prompt under T, so the prompt is T - 128 to T - 1 tokens (with a 5-digit key); exact sizing
    fills to T."""
    cfg = PasskeyConfig(lengths=[500, 777, 1000], trials=20)
    original = prepare_passkey(cfg, byte_tokenizer, EvalContext(1024, seed=3))
    exact = prepare_passkey(
        PasskeyConfig(lengths=[500, 777, 1000], trials=20, sizing="exact"),
        byte_tokenizer,
        EvalContext(1024, seed=3),
    )
    for prompt in original:
        template = len(byte_tokenizer(prompt_text(prompt.key, 0, 0))["input_ids"])
        assert prompt.filler_chars == (prompt.length - 1 - template) // 128 * 128 or len(prompt.key) < 5
        assert prompt.length - 128 <= len(prompt.input_ids) < prompt.length or len(prompt.key) < 5
    assert max(len(p.input_ids) for p in exact if p.length == 777) == 777
    assert all(len(p.input_ids) <= p.length for p in exact)


def test_default_lengths_follow_the_checkpoint(byte_tokenizer):
    assert default_lengths(16384) == [1024, 2048, 4096, 8192, 16384]
    assert default_lengths(20480) == [1024, 2048, 4096, 8192, 16384, 20480]
    assert default_lengths(131072)[-3:] == [32768, 65536, 131072]
    assert default_lengths(700) == [700]
    prompts = prepare_passkey(PasskeyConfig(trials=2), byte_tokenizer, EvalContext(max_positions=1024))
    assert [p.length for p in prompts] == [1024, 1024]


def test_prompt_shorter_than_the_template_is_refused(byte_tokenizer):
    with pytest.raises(
        ConfigError, match="eval.passkey.lengths: 100 is too short for the prompt without filler"
    ):
        PasskeyPromptBuilder(byte_tokenizer).build_at_depth(100, 0.5, "12345")
    with pytest.raises(ConfigError, match="eval.passkey.lengths: 200 is too short"):
        prepare_passkey(PasskeyConfig(lengths=[400, 200]), byte_tokenizer, EvalContext(max_positions=1024))


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


def test_exact_random_sampling_draws_keys_and_split_points_as_the_original(byte_tokenizer):
    cfg = PasskeyConfig(lengths=[400], trials=40, sizing="exact")
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
    ("field", "value"),
    [
        ("lengths", []),
        ("depths", [1.5]),
        ("trials", 0),
        ("sampling", "fixed"),
        ("sizing", "tight"),
        ("length_step", 0),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"^{field}"):
        PasskeyConfig(**{field: value})


class ControlledAnswers:
    """The generation backend of a run: reads each prompt (byte tokenizer) and answers by a rule
    on the key's place, so the score grid is known before the scorer computes it. A wrong answer
    holds the key after another number: only the first integer counts."""

    def __init__(self, rule):
        self.rule, self.calls = rule, []

    def __call__(self, model, tokenizer, prompts, max_new_tokens, **kwargs):
        self.calls.append((type(model).__name__, len(prompts), max_new_tokens, kwargs["batch_size"]))
        answers = []
        for ids in prompts:
            text = tokenizer.decode(ids, skip_special_tokens=True)
            key = re.search(r"The pass key is (\d+)\.", text).group(1)
            _, before, _, after, _ = text.split("\n")
            right = self.rule(len(ids), len(before) / (len(before) + len(after)))
            answers.append(f" {key}. The pass key is {key}." if right else f" 7, not {key}")
        return answers


def _run(tiny_eval_model, passkey: PasskeyConfig, rule) -> tuple:
    from dprope.eval.backends import Backends
    from dprope.eval.suite import EvalConfig, run_suite

    answers = ControlledAnswers(rule)
    settings = EvalConfig(tasks=["passkey"], batch_size=8, progress=False, passkey=passkey)
    report = run_suite(tiny_eval_model, settings, backends=Backends(generate=answers))
    return report, answers


def test_end_to_end_grid_scores_the_known_answers(tiny_eval_model, tmp_path):
    """Right at length 400; at 640 only when the key sits in the first 30% of the filler."""
    cfg = PasskeyConfig(lengths=[400, 640], sampling="grid", depths=[0.0, 0.5, 1.0], trials=2)
    report, answers = _run(tiny_eval_model, cfg, lambda tokens, share: tokens < 400 or share < 0.3)
    result = report.benchmarks["passkey"]
    assert answers.calls == [("LlamaForCausalLM", 12, 10, 8)]  # the loaded model, every prompt at once
    assert result.details["accuracy"] == [[100.0, 100.0, 100.0], [100.0, 0.0, 0.0]]  # (lengths, depths)
    assert result.summary == {"400": 100.0, "640": pytest.approx(100 / 3), "avg": pytest.approx(200 / 3)}
    assert [s["correct"] for s in result.samples if s["length"] == 640] == [True, True] + [False] * 4
    assert result.details["filler_chars"] == {"400": [128, 128], "640": [384, 384]}  # steps of 128 under T
    assert "| accuracy | 100.0 | 33.3 | 66.7 |" in result.markdown
    assert report.model["max_position_embeddings"] == 1024
    figures = BENCHMARK.plot(result, "tiny", tmp_path)
    assert [p.name for p in figures] == ["passkey.png", "passkey_heatmap.png"]


def test_end_to_end_random_depths_are_binned_into_fifths(tiny_eval_model):
    """Random split points: right when less than 40% of the filler comes before the key, so the
    first two fifths score 100 and the other three 0 (each fifth holds some of the 40 draws)."""
    cfg = PasskeyConfig(lengths=[400], trials=40)
    report, _ = _run(tiny_eval_model, cfg, lambda tokens, share: share < 0.4)
    result = report.benchmarks["passkey"]
    assert result.details["depths"] == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert result.details["accuracy"] == [[100.0, 100.0, 0.0, 0.0, 0.0]]
    right = sum(s["depth"] < 0.4 for s in result.samples)
    assert 0 < right < 40 and result.summary["400"] == pytest.approx(100 * right / 40)
    assert {s["depth_column"] for s in result.samples} == {0.1, 0.3, 0.5, 0.7, 0.9}
