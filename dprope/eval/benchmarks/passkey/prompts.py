"""Passkey prompts as the original setup builds them (landmark-attention's ``run_test.py``,
reused by the YaRN scripts).

One string, tokenized once (with the tokenizer's BOS): the task description, the filler before
the key, the key line, the filler after it and the question, joined by newlines as printed. The
filler is the template's five sentences repeated and joined by spaces, cut to a number of
characters; the filler before and the filler after both start at its beginning. A prompt of
target length T has the most filler characters G that keeps it within T tokens (exactly T with a
byte tokenizer; with a subword tokenizer a merge may leave it a token or two short, the actual
count is recorded).

Key and position (``sampling``). ``random`` (default, the original): the key is
``randint(1, 50000)`` and the split point is uniform over the G + 1 positions
(``randint(0, G)`` characters before the key, drawn first). ``grid``: each depth of ``depths``
puts round(depth x G) characters before the key, ``trials`` keys per cell.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dprope.config import ConfigError
from dprope.eval.benchmarks.passkey.config import PasskeyConfig
from dprope.eval.chat import encode_prompt
from dprope.eval.common import EvalContext, check_length

TASK_DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"
KEY_RANGE = (1, 50000)  # the original's random.randint(1, 50000)


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

    def __init__(self, tokenizer, chat: bool = False):
        self.tokenizer = tokenizer
        self.chat = chat  # wrapped in the chat template (eval.chat_template), counted in the length
        self._random_chars: dict[int, int] = {}  # length -> G of the random draw

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text, self.chat)

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


def prepare_passkey(cfg: PasskeyConfig, tokenizer, ctx: EvalContext) -> list[PasskeyPrompt]:
    """Every prompt, drawn from ``ctx.seed``: lengths x trials (random), or lengths x depths x
    trials (grid)."""
    for length in cfg.lengths:
        check_length("eval.passkey.lengths", length, ctx)
    builder = PasskeyPromptBuilder(tokenizer, ctx.chat_template)
    rng = random.Random(ctx.seed)
    if cfg.sampling == "random":
        return [builder.build_random(length, rng) for length in cfg.lengths for _ in range(cfg.trials)]
    return [
        builder.build_at_depth(length, depth, str(rng.randint(*KEY_RANGE)))
        for length in cfg.lengths
        for depth in cfg.depths
        for _ in range(cfg.trials)
    ]
