"""Passkey retrieval (Mohtashami and Jaggi, 2023), the prompt of method-notes section 7.

Length rule. A prompt of target length T tokens is the concatenation of separately tokenized
pieces: the task description (with the tokenizer's BOS), n tokens of filler, the key line,
m tokens of filler, and the question, with F = n + m = T - (the three fixed pieces) and
n = round(depth * F). The filler is the sentence group of the template repeated, joined by
spaces, and cut at a token boundary: n/u and m/u repetitions for a group of u tokens, the last
one possibly partial. So every prompt is exactly T tokens and the key line starts at token
``len(description) + n``; depth 0 puts the key right after the description, depth 1 right
before the question. Pieces are joined by newlines as in the template.

Scoring: greedy decoding; a trial is correct when the first integer in the answer is the key.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from dprope.config import ConfigError
from dprope.eval.common import BenchmarkResult, EvalContext, check_length, markdown_table, mean
from dprope.eval.generation import greedy_generate

TASK_DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"
LENGTHS = (1024, 2048, 4096, 8192, 12288, 16384, 20480)  # up to 20k tokens (method-notes section 7)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class PasskeyConfig:
    lengths: list[int] = field(default_factory=lambda: list(LENGTHS))  # exact prompt lengths in tokens
    depths: list[float] = field(default_factory=lambda: list(DEPTHS))  # share of the filler before the key
    trials: int = 10  # N random 5-digit keys per (length, depth)
    max_new_tokens: int = 8  # greedy answer length (5 digits need at most 5 tokens with LLaMA's tokenizer)

    def __post_init__(self) -> None:
        if not self.lengths or any(n <= 0 for n in self.lengths):
            raise ConfigError(
                "lengths", f"must be a non-empty list of positive token counts (got {self.lengths})"
            )
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ConfigError(
                "depths", f"must be a non-empty list of fractions in [0, 1] (got {self.depths})"
            )
        if self.trials < 1:
            raise ConfigError("trials", f"must be >= 1 (got {self.trials})")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1 (got {self.max_new_tokens})")


@dataclass
class PasskeyPrompt:
    input_ids: list[int]
    key: str
    length: int
    depth: float
    key_start: int  # index of the key line's first token
    key_end: int  # index after its last token


class PasskeyPromptBuilder:
    """Builds exact-length passkey prompts for one tokenizer (see the module docstring)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.head = list(tokenizer(TASK_DESCRIPTION + "\n", add_special_tokens=True)["input_ids"])
        self.question = self._encode("\n" + QUESTION)
        self._filler = self._encode(FILLER)  # grows on demand
        self._unit = len(self._filler)  # u: tokens of one filler group
        self._repeats = 1

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def key_line(self, key: str) -> list[int]:
        return self._encode("\n" + KEY_LINE.format(key=key) + "\n")

    def fixed_length(self, key: str) -> int:
        """Tokens that are not filler: description, key line and question."""
        return len(self.head) + len(self.key_line(key)) + len(self.question)

    def filler(self, count: int) -> list[int]:
        """The first ``count`` tokens of the filler group repeated and joined by spaces."""
        while len(self._filler) < count:
            self._repeats = max(2 * self._repeats, count // max(1, self._unit) + 2)
            self._filler = self._encode(" ".join([FILLER] * self._repeats))
        return self._filler[:count]

    def build(self, length: int, depth: float, key: str) -> PasskeyPrompt:
        key_ids = self.key_line(key)
        budget = length - len(self.head) - len(key_ids) - len(self.question)
        if budget < 0:
            raise ConfigError(
                "eval.passkey.lengths",
                f"{length} is shorter than the prompt without filler ({length - budget} tokens)",
            )
        before = round(depth * budget)
        key_start = len(self.head) + before
        ids = self.head + self.filler(before) + key_ids + self.filler(budget - before) + self.question
        return PasskeyPrompt(ids, key, length, depth, key_start, key_start + len(key_ids))


def random_keys(count: int, rng: random.Random) -> list[str]:
    return [str(rng.randint(10000, 99999)) for _ in range(count)]


def is_correct(answer: str, key: str) -> bool:
    match = re.search(r"\d+", answer)
    return match is not None and match.group(0) == key


def prepare_passkey(cfg: PasskeyConfig, tokenizer, ctx: EvalContext) -> list[PasskeyPrompt]:
    """The full grid of prompts: lengths x depths x trials, keys drawn from ``ctx.seed``."""
    for length in cfg.lengths:
        check_length("eval.passkey.lengths", length, ctx)
    builder = PasskeyPromptBuilder(tokenizer)
    rng = random.Random(ctx.seed)
    return [
        builder.build(length, depth, key)
        for length in cfg.lengths
        for depth in cfg.depths
        for key in random_keys(cfg.trials, rng)
    ]


def run_passkey(
    model, tokenizer, cfg: PasskeyConfig, prompts: list[PasskeyPrompt], ctx: EvalContext
) -> BenchmarkResult:
    answers = greedy_generate(
        model,
        tokenizer,
        [p.input_ids for p in prompts],
        cfg.max_new_tokens,
        batch_size=ctx.batch_size,
        desc="passkey",
        progress=ctx.progress,
    )
    samples = [
        {"length": p.length, "depth": p.depth, "key": p.key, "answer": a, "correct": is_correct(a, p.key)}
        for p, a in zip(prompts, answers, strict=True)
    ]

    def accuracy(length: int, depth: float | None = None) -> float:
        hits = [
            s["correct"] for s in samples if s["length"] == length and (depth is None or s["depth"] == depth)
        ]
        return 100.0 * mean(hits)

    by_length = {str(n): accuracy(n) for n in cfg.lengths}
    grid = [[accuracy(n, d) for d in cfg.depths] for n in cfg.lengths]  # (lengths, depths)
    summary = {**by_length, "avg": mean(list(by_length.values()))}
    markdown = "Accuracy (%) by prompt length (tokens):\n\n" + markdown_table(
        ["length", *by_length, "avg"], [["accuracy", *summary.values()]], 1
    )
    markdown += "\n\nAccuracy (%) by length and key depth:\n\n" + markdown_table(
        ["length \\ depth", *(f"{d:g}" for d in cfg.depths)],
        [[n, *row] for n, row in zip(cfg.lengths, grid, strict=True)],
        1,
    )
    details = {
        "lengths": cfg.lengths,
        "depths": cfg.depths,
        "trials": cfg.trials,
        "accuracy_by_length": by_length,
        "accuracy": grid,
    }
    return BenchmarkResult("passkey", summary, details, samples, markdown)
