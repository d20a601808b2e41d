"""A long-range task for a small model: a passkey in filler, seeded.

The passkey test of the paper (Mohtashami and Jaggi 2023; docs/method-notes.md, section 7) hides a
five-digit key in filler and asks for it at the end; its 150-character task description alone
exceeds the CPU preset's pre-training context (L = 128), and a five-digit key needs the model to
copy five tokens in order. This layout keeps what the test measures, finding a key far back in
filler, in the simplest form we found::

    <filler before>
    pass key=7Q.
    <filler after>
    pass key?7Q          <- the last key_length tokens are the answer

The filler is the original's sentences in lower case, the key's characters alternate between
digits and upper-case letters, and nothing else in a prompt is a digit or an upper-case letter:
each answer token is the one token of its class in the prompt, so attention can find it by
content at any distance, and the cue's ``?`` says when to. Pre-training mixes such documents,
each at most L tokens, into the corpus (`dprope.reproduce.corpus`) so that the model may learn
retrieval within L; in the packed pre-training windows other documents (Python source, earlier
passkeys) come before a document, so there the key is the latest of its class, not the only
one. Whether the model learned the task is measured, not assumed: the report compares the
pre-trained model's accuracy at L with the chance accuracy (`chance_accuracy`). Evaluation asks
for the key at L, 2L and s x L, with the key line at several depths (`dprope.reproduce.retrieval`).

Depth ``d`` puts round(d x G) of the G filler characters before the key line (0: right after
BOS, the farthest from the cue; 1: right before the cue, the nearest), as the passkey grid of
the evaluation suite does. Every draw comes from a `random.Random` seeded explicitly: the same
seed gives the same documents and prompts on every machine.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

FILLER = "the grass is green. the sky is blue. the sun is yellow. here we go. there and back again."
KEY_LINE = "pass key={key}."
CUE = "pass key?"
KEY_ALPHABETS = ("0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # alternating, first to last character


def filler(chars: int) -> str:
    """The first ``chars`` characters of the filler sentences repeated, joined by spaces."""
    repeats = chars // (len(FILLER) + 1) + 1
    return " ".join([FILLER] * repeats)[:chars]


def document_text(key: str, before: int, after: int) -> str:
    """The whole document: filler, key line, filler, cue and answer, joined by newlines."""
    return "\n".join([filler(before), KEY_LINE.format(key=key), filler(after), CUE + key])


def overhead_chars(key_length: int) -> int:
    """Every character of a document but the filler's."""
    return len(document_text("0" * key_length, 0, 0))


def chance_accuracy(key_length: int) -> float:
    """The exact-match accuracy of guessing each key character uniformly within its class."""
    return math.prod(1 / len(KEY_ALPHABETS[i % len(KEY_ALPHABETS)]) for i in range(key_length))


def random_key(rng: random.Random, key_length: int) -> str:
    return "".join(rng.choice(KEY_ALPHABETS[i % len(KEY_ALPHABETS)]) for i in range(key_length))


def training_documents(seed: int, count: int, key_length: int, min_chars: int, max_chars: int) -> list[str]:
    """``count`` documents of ``min_chars`` .. ``max_chars`` characters, log-uniform (as many
    documents of 20-40 characters as of 40-80: the short ones, where the key is near, teach the
    copy, the long ones carry it across L), the key line at a uniform depth; ``min_chars`` must
    leave room for the layout (`overhead_chars`)."""
    if min_chars < overhead_chars(key_length) or max_chars < min_chars:
        raise ValueError(
            f"document lengths must satisfy {overhead_chars(key_length)} <= min_chars <= max_chars "
            f"(got {min_chars}, {max_chars})"
        )
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        chars = round(math.exp(rng.uniform(math.log(min_chars), math.log(max_chars))))
        fill = chars - overhead_chars(key_length)
        before = rng.randint(0, fill)
        documents.append(document_text(random_key(rng, key_length), before, fill - before))
    return documents


@dataclass
class RetrievalPrompt:
    """One test: ``input_ids`` (BOS first) end with the answer's tokens, ``answer_tokens`` of them."""

    input_ids: list[int]
    answer_tokens: int
    key: str
    length: int  # the target length T in tokens, BOS and answer included
    depth: float
    before_chars: int  # filler characters before the key line


class PromptBuilder:
    """Prompts of a target token length for one tokenizer.

    With the byte tokenizer a prompt has exactly T tokens; with a subword tokenizer the filler is
    the most that keeps it within T (a merge may leave it a token short; ``len(input_ids)`` is
    the actual count). The answer's tokens must be the whole text's last tokens: a tokenizer
    that merges the cue with the key is refused.
    """

    def __init__(self, tokenizer, key_length: int):
        self.tokenizer = tokenizer
        self.key_length = key_length
        self._filler_chars: dict[int, int] = {}

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def filler_chars(self, length: int) -> int:
        """G: the most filler characters with which a document stays within ``length`` tokens."""
        if length not in self._filler_chars:
            key = "5" * self.key_length

            def fits(chars: int) -> bool:
                return len(self.encode(document_text(key, chars // 2, chars - chars // 2))) <= length

            if not fits(0):
                raise ValueError(f"{length} tokens cannot hold the layout without filler")
            low, high = 0, 8 * length + 8
            while low < high:  # the largest that fits
                mid = (low + high + 1) // 2
                low, high = (mid, high) if fits(mid) else (low, mid - 1)
            self._filler_chars[length] = low
        return self._filler_chars[length]

    def prompt(self, length: int, depth: float, key: str) -> RetrievalPrompt:
        fill = self.filler_chars(length)
        before = round(depth * fill)
        text = document_text(key, before, fill - before)
        ids = self.encode(text)
        context = self.encode(text[: -len(key)])
        answer = len(ids) - len(context)
        if ids[: len(context)] != context or answer < 1:
            raise ValueError("the tokenizer merges the cue with the key: the answer has no tokens of its own")
        return RetrievalPrompt(ids, answer, key, length, depth, before)

    def grid(self, lengths: list[int], depths: list[float], trials: int, seed: int) -> list[RetrievalPrompt]:
        """``trials`` prompts per (length, depth) cell, each cell's keys from its own seeded stream
        (``seed:length:depth``), so adding a cell changes no other cell's keys."""
        prompts = []
        for length in lengths:
            for depth in depths:
                rng = random.Random(f"{seed}:{length}:{depth}")
                prompts.extend(
                    self.prompt(length, depth, random_key(rng, self.key_length)) for _ in range(trials)
                )
        return prompts
