"""Synthetic tasks of RULER (Hsieh et al., 2024, "RULER: What's the Real Context Size of Your
Long-Context Language Models?"), Sec. 3: the templates of its NIAH, variable-tracking and
common-words-extraction tasks, rebuilt to be drawn from a seed with no download.

Each task draws its random content once per sample (`draw`), then renders the prompt with a
haystack of ``units`` pieces (`render`): noise sentences for NIAH and variable tracking,
distinct rare words for common-words extraction. The runner picks the largest ``units`` that
fits the length, so the content, not the length, is what the seed fixes. Keys and words are
pseudo-words of three consonant-vowel syllables; values are 7-digit (NIAH) or 5-digit (VT)
numbers. Needle and assignment positions are uniform random depths in the haystack.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

NOISE = [
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
]
NIAH_TEMPLATE = (
    "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the numbers afterwards.\n{context}\n"
    "What are all the special magic numbers for {query} mentioned in the provided text?"
    " The special magic numbers for {query} mentioned in the provided text are"
)
NEEDLE = "One of the special magic numbers for {key} is: {value}."
VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {value} in the text above."
    " Answer: According to the chain(s) of variable assignment in the text above, {count} variables are "
    "assigned the value {value}, they are: "
)
CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\n"
    "Question: What are the {count} most common words in the above list?"
    " Answer: The top {count} words that appear most often in the list are:"
)

_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]


def pseudo_words(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct pronounceable words of three syllables."""
    n = len(_SYLLABLES)
    return [
        _SYLLABLES[i // (n * n)] + _SYLLABLES[i // n % n] + _SYLLABLES[i % n]
        for i in rng.sample(range(n**3), count)
    ]


@dataclass
class Draw:
    """A sample's random content, fixed before its length is fitted."""

    fields: dict[str, Any]
    answers: list[str]


def noise(units: int) -> list[str]:
    """The first ``units`` sentences of the noise haystack (its five sentences, cycled)."""
    return [NOISE[i % len(NOISE)] for i in range(units)]


def _insert(units: list[str], pieces: list[str], depths: list[float]) -> str:
    """The haystack ``units`` with ``pieces`` inserted, in order, at the sorted ``depths``."""
    out, start = [], 0
    for piece, depth in zip(pieces, sorted(depths), strict=True):
        cut = round(depth * len(units))
        out += units[start:cut] + [piece]
        start = cut
    return " ".join(out + units[start:])


class NeedleTask:
    """NIAH. Single: one needle, asked for. Multi-key: ``num_needles`` needles of distinct keys,
    one asked for. Multi-value: ``num_needles`` values under one key, all asked for. Multi-query:
    ``num_needles`` distinct keys, all asked for."""

    default_max_new_tokens = 128

    def __init__(self, multi_key: bool = False, multi_value: bool = False, multi_query: bool = False):
        self.multi_key, self.multi_value, self.multi_query = multi_key, multi_value, multi_query

    def draw(self, rng: random.Random, settings, max_units: int) -> Draw:
        n = settings.num_needles
        keys = pseudo_words(rng, n if self.multi_key or self.multi_query else 1)
        needles = [
            (k, str(rng.randint(1_000_000, 9_999_999)))
            for k in keys
            for _ in range(n if self.multi_value else 1)
        ]
        rng.shuffle(needles)
        queried = keys if self.multi_query else keys[:1]
        depths = [rng.random() for _ in needles]
        answers = [v for k, v in needles if k in queried]
        return Draw({"needles": needles, "depths": depths, "query": ", ".join(queried)}, answers)

    def render(self, draw: Draw, units: int, settings) -> str:
        pieces = [NEEDLE.format(key=k, value=v) for k, v in draw.fields["needles"]]
        context = _insert(noise(units), pieces, draw.fields["depths"])
        return NIAH_TEMPLATE.format(context=context, query=draw.fields["query"])


class VariableTrackingTask:
    """VT: ``vt_chains`` chains ``VAR A = 12345.``, ``VAR B = VAR A.``, ... of ``vt_hops`` hops each,
    spread through the noise in order; the answer is every variable of the first chain."""

    default_max_new_tokens = 30

    def draw(self, rng: random.Random, settings, max_units: int) -> Draw:
        size = settings.vt_hops + 1
        names: list[str] = []
        while len(names) < settings.vt_chains * size:
            name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
            if name not in names:
                names.append(name)
        values = rng.sample(range(10000, 100000), settings.vt_chains)
        statements, depths = [], []
        for c in range(settings.vt_chains):
            chain = names[c * size : (c + 1) * size]
            statements += [f"VAR {chain[0]} = {values[c]}."] + [
                f"VAR {b} = VAR {a}." for a, b in pairwise(chain)
            ]
            depths += sorted(rng.random() for _ in chain)  # in order within a chain
        order = sorted(range(len(statements)), key=lambda i: depths[i])
        placed = {"statements": [statements[i] for i in order], "depths": [depths[i] for i in order]}
        return Draw({**placed, "value": values[0]}, names[:size])

    def render(self, draw: Draw, units: int, settings) -> str:
        context = _insert(noise(units), draw.fields["statements"], draw.fields["depths"])
        return VT_TEMPLATE.format(context=context, value=draw.fields["value"], count=len(draw.answers))


class CommonWordsTask:
    """CWE: ``cwe_words`` words ``cwe_common_freq`` times each among rare words
    ``cwe_uncommon_freq`` times each, shuffled and numbered; the answer is the common words.
    The haystack units are the rare words."""

    default_max_new_tokens = 120

    def draw(self, rng: random.Random, settings, max_units: int) -> Draw:
        words = pseudo_words(rng, settings.cwe_words + max_units)
        common = words[: settings.cwe_words]
        return Draw(
            {"common": common, "rare": words[settings.cwe_words :], "shuffle_seed": rng.random()}, common
        )

    def render(self, draw: Draw, units: int, settings) -> str:
        rare = draw.fields["rare"][:units]
        words = draw.fields["common"] * settings.cwe_common_freq + rare * settings.cwe_uncommon_freq
        random.Random(draw.fields["shuffle_seed"]).shuffle(words)
        context = "\n".join(f"{i + 1}. {w}" for i, w in enumerate(words))
        return CWE_TEMPLATE.format(context=context, count=settings.cwe_words)


TASKS = {
    "niah_single": NeedleTask(),
    "niah_multikey": NeedleTask(multi_key=True),
    "niah_multivalue": NeedleTask(multi_value=True),
    "niah_multiquery": NeedleTask(multi_query=True),
    "vt": VariableTrackingTask(),
    "cwe": CommonWordsTask(),
}


def string_match_all(prediction: str, answers: list[str]) -> float:
    """RULER's metric: the share of the references found in the prediction (case-insensitive)."""
    text = prediction.lower()
    return sum(a.lower() in text for a in answers) / len(answers) if answers else 0.0
