"""Passkey prompts as the original setup builds them (landmark-attention's ``run_test.py``,
reused by the YaRN scripts' ``eval/passkey.py``).

One string, tokenized once (with the tokenizer's BOS): the task description, the filler before
the key, the key line, the filler after it and the question, joined by newlines as printed. The
filler is the template's five sentences repeated and joined by spaces, cut to a number of
characters G; the filler before and the filler after both start at its beginning.

Size (``sizing``). ``original`` (default), the original's search: for each target length T, in
increasing order and starting from the previous length's G, the filler grows by ``length_step``
(128) characters, each candidate measured on a freshly drawn prompt (split point, then key, from
the run's random stream, as the original draws them), until a prompt reaches T tokens; G is the
last size whose prompt stayed strictly under T. A drawn test prompt that still reaches T (a longer
key than the measured one, a different merge) loses ``length_step`` characters until it is under
T, so every prompt is strictly shorter than T; the original has no such guard (it never fires
with a byte tokenizer unless the measured key was shorter). ``exact``: G is the most characters
that keep the prompt within T tokens (exactly T with a byte tokenizer), settled once per length
for a 5-digit key, shrunk by one character while a drawn prompt is longer.

Key and position (``sampling``). ``random`` (default, the original): the key is
``randint(1, 50000)`` and the split point is uniform over the G + 1 positions
(``randint(0, G)`` characters before the key, drawn first). ``grid``: each depth of ``depths``
puts round(depth x G) characters before the key, ``trials`` keys per cell, G sized for that key
and depth (``original``: the largest multiple of ``length_step`` under T).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from dprope.config import ConfigError
from dprope.eval.benchmarks.passkey.config import PasskeyConfig, default_lengths
from dprope.eval.chat import encode_prompt
from dprope.eval.common import EvalContext, check_length

log = logging.getLogger(__name__)

TASK_DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"
KEY_RANGE = (1, 50000)  # the original's random.randint(1, 50000)
LONGEST_KEY = "0" * len(str(KEY_RANGE[1]))


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

    def __init__(self, tokenizer, sizing: str = "original", step: int = 128, chat: bool = False):
        self.tokenizer = tokenizer
        self.strict = sizing == "original"  # original: prompts strictly under T; exact: within T
        self.step = step if self.strict else 1  # characters a prompt loses while it is too long
        self.shortened = 0  # drawn prompts that had to lose filler to fit
        self.chat = chat  # wrapped in the chat template (eval.chat_template), counted in the length

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text, self.chat)

    def fits(self, tokens: int, length: int) -> bool:
        return tokens < length if self.strict else tokens <= length

    def _fits(self, length: int, key: str, chars: int, share: float) -> bool:
        before = round(share * chars)
        return self.fits(len(self.encode(prompt_text(key, before, chars - before))), length)

    def check_template(self, length: int, key: str = LONGEST_KEY) -> None:
        if not self._fits(length, key, 0, 0.0):
            tokens = len(self.encode(prompt_text(key, 0, 0)))
            raise ConfigError(
                "eval.passkey.lengths",
                f"{length} is too short for the prompt without filler ({tokens} tokens)",
            )

    def filler_chars(self, length: int, key: str, share: float) -> int:
        """G for this key and split share: the most filler characters (exact) or the most
        multiples of the step (original) with which the prompt fits ``length`` tokens."""
        self.check_template(length, key)
        unit = self.step
        low, high = 0, (8 * length + 8) // unit + 1  # tokens hold at most a few characters of this filler
        while low < high:  # largest number of units that fits
            mid = (low + high + 1) // 2
            if self._fits(length, key, mid * unit, share):
                low = mid
            else:
                high = mid - 1
        return low * unit

    def original_search(self, length: int, start: int, rng: random.Random) -> int:
        """The original's search for one target length, from ``start`` characters up in steps,
        each size measured on a prompt drawn from ``rng`` (split point, then key): the last size
        whose prompt stayed under ``length`` tokens."""
        size, last, tokens = start, start, 0
        while tokens < length:
            last = size
            size += self.step
            before = rng.randint(0, size)
            key = str(rng.randint(*KEY_RANGE))
            tokens = len(self.encode(prompt_text(key, before, size - before)))
        return last

    def build(self, length: int, key: str, before: int, chars: int) -> PasskeyPrompt:
        text = prompt_text(key, before, chars - before)
        return PasskeyPrompt(self.encode(text), text, key, length, before / chars if chars else 0.0, chars)

    def build_fitted(self, length: int, key: str, before: int, chars: int) -> PasskeyPrompt:
        """The prompt with ``before`` of ``chars`` filler characters before the key, losing filler
        (a step at a time, the split point kept where it can be) until it fits ``length``."""
        prompt = self.build(length, key, before, chars)
        if not self.fits(len(prompt.input_ids), length):
            self.shortened += 1
        while not self.fits(len(prompt.input_ids), length) and chars > 0:
            chars = max(0, chars - self.step)
            prompt = self.build(length, key, min(before, chars), chars)
        return prompt

    def build_at_depth(self, length: int, depth: float, key: str) -> PasskeyPrompt:
        chars = self.filler_chars(length, key, depth)
        return self.build(length, key, round(depth * chars), chars)

    def build_random(self, length: int, chars: int, rng: random.Random) -> PasskeyPrompt:
        """The original's draw: the split point first (uniform over G + 1 places), then the key."""
        before = rng.randint(0, chars)
        key = str(rng.randint(*KEY_RANGE))
        return self.build_fitted(length, key, before, chars)

    def random_chars(self, lengths: list[int], rng: random.Random) -> dict[int, int]:
        """G per length for random sampling. Original: the original's search over the lengths in
        increasing order, each from the previous G (drawing from ``rng`` as the original does).
        Exact: once per length for a 5-digit key at the middle."""
        for length in lengths:
            self.check_template(length)
        sizes, last = {}, 0
        for length in sorted(set(lengths)):
            if self.strict:
                last = sizes[length] = self.original_search(length, last, rng)
            else:
                sizes[length] = self.filler_chars(length, LONGEST_KEY, 0.5)
        return sizes


def passkey_lengths(cfg: PasskeyConfig, ctx: EvalContext) -> list[int]:
    """The configured lengths, or 1024, 2048, ... up to the checkpoint's max_position_embeddings."""
    return list(cfg.lengths) if cfg.lengths is not None else default_lengths(ctx.max_positions)


def prepare_passkey(cfg: PasskeyConfig, tokenizer, ctx: EvalContext) -> list[PasskeyPrompt]:
    """Every prompt, drawn from ``ctx.seed``: lengths x trials (random), or lengths x depths x
    trials (grid)."""
    lengths = passkey_lengths(cfg, ctx)
    for length in lengths:
        check_length("eval.passkey.lengths", length, ctx)
    builder = PasskeyPromptBuilder(tokenizer, cfg.sizing, cfg.length_step, ctx.chat_template)
    rng = random.Random(ctx.seed)
    if cfg.sampling == "random":
        sizes = builder.random_chars(lengths, rng)
        prompts = [builder.build_random(n, sizes[n], rng) for n in lengths for _ in range(cfg.trials)]
    else:
        prompts = [
            builder.build_at_depth(length, depth, str(rng.randint(*KEY_RANGE)))
            for length in lengths
            for depth in cfg.depths
            for _ in range(cfg.trials)
        ]
    if builder.shortened:
        log.info(
            "passkey: %d of %d drawn prompts reached their target length and lost filler to fit",
            builder.shortened,
            len(prompts),
        )
    return prompts
