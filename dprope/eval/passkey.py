"""Passkey retrieval (Mohtashami and Jaggi, 2023), the template of docs/method-notes.md, section 7 as
the original setup builds it (landmark-attention's ``run_test.py``, reused by the YaRN scripts).

Prompt. One string, tokenized once (with the tokenizer's BOS): the task description, the filler
before the key, the key line, the filler after it and the question, joined by newlines as
printed. The filler is the template's five sentences repeated and joined by spaces, cut to a
number of characters; the filler before and the filler after both start at its beginning. A
prompt of target length T has the most filler characters G that keeps it within T tokens
(exactly T with a byte tokenizer; with a subword tokenizer a merge may leave it a token or two
short, the actual count is recorded).

Key and position (``sampling``). ``random`` (default, the original): the key is
``randint(1, 50000)`` and the split point is uniform over the G + 1 positions
(``randint(0, G)`` characters before the key, drawn first); the heatmap bins the realised depths.
``grid``: each depth of ``depths`` puts round(depth x G) characters before the key, ``trials``
keys per cell.

Scoring: greedy decoding of 10 new tokens (the original's answer length); a trial is correct
when the first integer in the answer is the key.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from dprope.config import ConfigError, check_choice
from dprope.eval.common import BenchmarkResult, EvalContext, check_length, markdown_table, mean
from dprope.eval.generation import greedy_generate

TASK_DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"
LENGTHS = (1024, 2048, 4096, 8192, 12288, 16384, 20480)  # up to 20k tokens (docs/method-notes.md, section 7)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
SAMPLINGS = ("random", "grid")
KEY_RANGE = (1, 50000)  # the original's random.randint(1, 50000)
DEPTH_BINS = 5  # random sampling: realised depths binned into fifths for the heatmap


@dataclass
class PasskeyConfig:
    lengths: list[int] = field(default_factory=lambda: list(LENGTHS))  # target prompt lengths in tokens
    sampling: str = "random"  # random: uniform random split point (original) | grid: the depths below
    depths: list[float] = field(
        default_factory=lambda: list(DEPTHS)
    )  # grid only: share of the filler before the key
    trials: int = 10  # random: prompts per length; grid: prompts per (length, depth)
    max_new_tokens: int = 10  # greedy answer length (the original's 10)

    def __post_init__(self) -> None:
        if not self.lengths or any(n <= 0 for n in self.lengths):
            raise ConfigError(
                "lengths", f"must be a non-empty list of positive token counts (got {self.lengths})"
            )
        check_choice(self, "sampling", SAMPLINGS)
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
    text: str  # the prompt string (without the BOS)
    key: str
    length: int  # the target length T
    depth: float  # share of the filler characters before the key line
    filler_chars: int  # G


def filler(chars: int) -> str:
    """The first ``chars`` characters of the filler sentences repeated, joined by spaces."""
    repeats = chars // (len(FILLER) + 1) + 1
    return " ".join([FILLER] * repeats)[:chars]


def prompt_text(key: str, before: int, after: int) -> str:
    """The template as one string: its five parts joined by newlines, as printed."""
    return "\n".join([TASK_DESCRIPTION, filler(before), KEY_LINE.format(key=key), filler(after), QUESTION])


class PasskeyPromptBuilder:
    """Prompts of a target token length for one tokenizer (see the module docstring)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._random_chars: dict[int, int] = {}  # length -> G of the random draw

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def _fits(self, length: int, key: str, chars: int, share: float) -> list[int] | None:
        before = round(share * chars)
        ids = self.encode(prompt_text(key, before, chars - before))
        return ids if len(ids) <= length else None

    def filler_chars(self, length: int, key: str, share: float) -> int:
        """G: the most filler characters with which the prompt stays within ``length`` tokens."""
        if self._fits(length, key, 0, share) is None:
            raise ConfigError(
                "eval.passkey.lengths",
                f"{length} is shorter than the prompt without filler ({len(self.encode(prompt_text(key, 0, 0)))} tokens)",
            )
        low, high = 0, 8 * length + 8  # tokens hold at most a few characters of this filler
        while low < high:  # largest chars that fits
            mid = (low + high + 1) // 2
            if self._fits(length, key, mid, share) is not None:
                low = mid
            else:
                high = mid - 1
        return low

    def build(self, length: int, key: str, before: int, chars: int) -> PasskeyPrompt:
        text = prompt_text(key, before, chars - before)
        return PasskeyPrompt(self.encode(text), text, key, length, before / chars if chars else 0.0, chars)

    def build_at_depth(self, length: int, depth: float, key: str) -> PasskeyPrompt:
        chars = self.filler_chars(length, key, depth)
        return self.build(length, key, round(depth * chars), chars)

    def build_random(self, length: int, rng: random.Random) -> PasskeyPrompt:
        """The original's draw: the split point first (uniform over G + 1 places), then the key.
        G is settled once per length for a 5-digit key (shorter keys leave the prompt a little
        shorter, as in the original), and shrunk only if the drawn split re-tokenizes longer."""
        if length not in self._random_chars:
            self._random_chars[length] = self.filler_chars(length, "0" * len(str(KEY_RANGE[1])), 0.5)
        chars = self._random_chars[length]
        before = rng.randint(0, chars)
        key = str(rng.randint(*KEY_RANGE))
        prompt = self.build(length, key, before, chars)
        while len(prompt.input_ids) > length and chars > 0:
            chars -= 1
            prompt = self.build(length, key, min(before, chars), chars)
        return prompt


def is_correct(answer: str, key: str) -> bool:
    match = re.search(r"\d+", answer)
    return match is not None and match.group(0) == key


def prepare_passkey(cfg: PasskeyConfig, tokenizer, ctx: EvalContext) -> list[PasskeyPrompt]:
    """Every prompt, drawn from ``ctx.seed``: lengths x trials (random), or lengths x depths x
    trials (grid)."""
    for length in cfg.lengths:
        check_length("eval.passkey.lengths", length, ctx)
    builder = PasskeyPromptBuilder(tokenizer)
    rng = random.Random(ctx.seed)
    if cfg.sampling == "random":
        return [builder.build_random(length, rng) for length in cfg.lengths for _ in range(cfg.trials)]
    return [
        builder.build_at_depth(length, depth, str(rng.randint(*KEY_RANGE)))
        for length in cfg.lengths
        for depth in cfg.depths
        for _ in range(cfg.trials)
    ]


def depth_columns(cfg: PasskeyConfig) -> list[float]:
    """The heatmap's depth columns: the grid's depths, or the centres of the fifths."""
    if cfg.sampling == "grid":
        return list(cfg.depths)
    return [(k + 0.5) / DEPTH_BINS for k in range(DEPTH_BINS)]


def depth_column(cfg: PasskeyConfig, depth: float) -> float:
    if cfg.sampling == "grid":
        return depth
    return (min(int(depth * DEPTH_BINS), DEPTH_BINS - 1) + 0.5) / DEPTH_BINS


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
        {
            "length": p.length,
            "tokens": len(p.input_ids),
            "depth": p.depth,
            "depth_column": depth_column(cfg, p.depth),
            "key": p.key,
            "answer": a,
            "correct": is_correct(a, p.key),
        }
        for p, a in zip(prompts, answers, strict=True)
    ]
    columns = depth_columns(cfg)

    def accuracy(length: int, column: float | None = None) -> float:
        hits = [
            s["correct"]
            for s in samples
            if s["length"] == length and (column is None or s["depth_column"] == column)
        ]
        return 100.0 * mean(hits) if hits else float("nan")

    by_length = {str(n): accuracy(n) for n in cfg.lengths}
    grid = [[accuracy(n, d) for d in columns] for n in cfg.lengths]  # (lengths, depth columns)
    summary = {**by_length, "avg": mean(list(by_length.values()))}
    markdown = "Accuracy (%) by prompt length (tokens):\n\n" + markdown_table(
        ["length", *by_length, "avg"], [["accuracy", *summary.values()]], 1
    )
    how = "depth bin centre (random split point)" if cfg.sampling == "random" else "key depth"
    markdown += f"\n\nAccuracy (%) by length and {how}:\n\n" + markdown_table(
        ["length \\ depth", *(f"{d:g}" for d in columns)],
        [[n, *row] for n, row in zip(cfg.lengths, grid, strict=True)],
        1,
    )
    details = {
        "sampling": cfg.sampling,
        "lengths": cfg.lengths,
        "depths": columns,
        "trials": cfg.trials,
        "accuracy_by_length": by_length,
        "accuracy": grid,
    }
    return BenchmarkResult("passkey", summary, details, samples, markdown)
