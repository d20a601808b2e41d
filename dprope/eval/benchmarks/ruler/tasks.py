"""The 13 tasks of RULER (Hsieh et al., 2024, "RULER: What's the Real Context Size of Your
Long-Context Language Models?"), Sec. 3 and App. B, with the parameters of its task set
(`synthetic.yaml`): eight needle-in-a-haystack variants, variable tracking (VT), common- and
frequent-words extraction (CWE, FWE) and two QA tasks.

A task turns (random source, haystack size, slot) into a prompt and its reference answers; the
runner (`data.build_samples`) picks the haystack size, in the task's own unit (noise blocks, essay words,
filler needles, words, documents), so that prompt + generation fit the target length. Prompts
end with RULER's answer prefix, which the model continues.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from string import ascii_lowercase, ascii_uppercase

from dprope.config import ConfigError
from dprope.eval.benchmarks.ruler.sources import QASet, english_words, key_parts, split_sentences

# One haystack unit of the "noise" tasks: five sentences, units joined by newlines.
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "One of the special magic {kind} for {key} is: {value}."
NIAH_PLURAL = (
    "Some special magic {kind} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {kind} afterwards.\n{context}\n"
    "What are all the special magic {kind} for {query} mentioned in the provided text?"
    " The special magic {kind} for {query} mentioned in the provided text are"
)
# RULER's wording when exactly one value is asked for (one query, one value per key).
NIAH_SINGULAR = (
    "A special magic {kind} is hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {kind} afterwards.\n{context}\n"
    "What is the special magic {kind} for {query} mentioned in the provided text?"
    " The special magic {kind} for {query} mentioned in the provided text is"
)
VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {value} in the text above."
    " Answer: According to the chain(s) of variable assignment in the text above, {count} variables are "
    "assigned the value {value}, they are: "
)
CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\n"
    "Question: What are the 10 most common words in the above list?"
    " Answer: The top 10 words that appear most often in the list are:"
)
FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three most "
    "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore "
    "the dots '....'. What are the three most frequently appeared words in the above coded text?"
    " Answer: According to the coded text above, the three most frequently appeared words are:"
)
QA_INSTRUCTION = "Answer the question based on the given documents. Only give me the answer and do not output any other words."
QA_TEMPLATE = (
    f"{QA_INSTRUCTION}\n\nThe following are given documents.\n\n{{context}}\n\n{QA_INSTRUCTION}\n\n"
    "Question: {query} Answer:"
)
# RULER draws needle depths (essay haystack) without replacement from 40 evenly spaced percentages.
DEPTHS = [round(100 * i / 39) for i in range(40)]


@dataclass
class Materials:
    """What prompts are built from besides randomness, read once per run."""

    count: Callable[[str], int]  # tokens of a text as the model reads it
    essay: list[str] | None = None  # essay haystack, as words
    qa: dict[str, QASet] = field(default_factory=dict)  # "squad" / "hotpotqa"
    memo: dict[str, int] = field(default_factory=dict)  # sizes fitted once per run (VT's example)


@dataclass(frozen=True)
class Slot:
    length: int  # target sequence length T
    budget: int  # prompt tokens allowed: T minus the generation length
    index: int  # sample number


def largest_fitting(count_at: Callable[[int], int], budget: int, lower: int) -> int | None:
    """The largest n >= lower with count_at(n) <= budget (count_at increasing), or None."""
    if count_at(lower) > budget:
        return None
    lo, hi = lower, 2 * lower
    while count_at(hi) <= budget:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count_at(mid) <= budget else (lo, mid)
    return lo


class RulerTask:
    """What every task shares: the smallest haystack, and RULER's search for the haystack size."""

    def fewest(self) -> int:
        return 1

    def search(self, count_at: Callable[[int], int], slot: Slot) -> int | None:
        """RULER's binary search: the largest haystack whose prompt fits the budget."""
        return largest_fitting(count_at, slot.budget, self.fewest())


def listed(items: list[str]) -> str:
    """RULER's list of queries: "a", "a, and b", "a, b, c, and d"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]


def _insert_lines(lines: list[str], pieces: list[str], rng: random.Random) -> list[str]:
    """``pieces`` inserted among ``lines`` at distinct random line indices (RULER's noise/needle haystack)."""
    out = list(lines)
    for index, piece in zip(
        sorted(rng.sample(range(len(lines)), len(pieces)), reverse=True), pieces, strict=True
    ):
        out.insert(index, piece)
    return out


def _insert_sentences(words: list[str], units: int, pieces: list[str], rng: random.Random) -> str:
    """``pieces`` between the sentences of the first ``units`` essay words (cycled), at depths
    drawn without replacement from `DEPTHS`."""
    text = " ".join(words[i % len(words)] for i in range(units))
    sentences = split_sentences(text)
    cuts = sorted(len(sentences) * d // 100 for d in rng.sample(DEPTHS, len(pieces)))
    parts, start = [], 0
    for cut, piece in zip(cuts, pieces, strict=True):
        parts += [" ".join(sentences[start:cut]), piece]
        start = cut
    return " ".join([*parts, " ".join(sentences[start:])])


@dataclass(frozen=True)
class Needle(RulerTask):
    """NIAH: ``num_keys`` keys with ``num_values`` values each, ``num_queries`` keys asked for.

    Haystack ``noise`` (unit: the five-sentence block, newline-joined), ``essay`` (unit: a word)
    or ``needle`` (unit: a filler needle of a random key and value, newline-joined). Keys are
    adjective-noun pairs or UUIDs; values 7-digit numbers or UUIDs."""

    haystack: str
    key_type: str = "words"
    value_type: str = "numbers"
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1
    max_new_tokens: int = 128
    metric: str = "all"

    @property
    def needs(self) -> str | None:
        return "essay" if self.haystack == "essay" else None

    def fewest(self) -> int:
        """Smallest haystack: one line per needle (noise, needle) or one word (essay)."""
        return 1 if self.haystack == "essay" else max(self.num_keys, self.num_queries) * self.num_values

    def step(self, slot: Slot) -> int:
        if self.haystack == "essay":
            return 500
        return 5 if slot.length < 4096 else 25

    def _random(self, kind: str, rng: random.Random) -> str:
        if kind == "numbers":
            return str(rng.randint(1_000_000, 9_999_999))
        if kind == "uuids":
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        adjectives, nouns = key_parts()
        return f"{rng.choice(adjectives)}-{rng.choice(nouns)}"

    def prompt(self, rng: random.Random, units: int, slot: Slot, m: Materials) -> tuple[str, list[str]]:
        num_keys = max(self.num_keys, self.num_queries)
        keys: list[str] = []
        while len(keys) < num_keys:  # distinct keys: a repeated key would make the answer ambiguous
            key = self._random(self.key_type, rng)
            keys += [] if key in keys else [key]
        values = [[self._random(self.value_type, rng) for _ in range(self.num_values)] for _ in keys]
        needles = [
            NEEDLE.format(kind=self.value_type, key=k, value=v)
            for k, vs in zip(keys, values, strict=True)
            for v in vs
        ]
        rng.shuffle(needles)
        if self.haystack == "essay":
            context = _insert_sentences(m.essay, units, needles, rng)
        else:
            if self.haystack == "noise":
                lines = [NOISE] * units
            else:
                lines = [
                    NEEDLE.format(
                        kind=self.value_type,
                        key=self._random(self.key_type, rng),
                        value=self._random(self.value_type, rng),
                    )
                    for _ in range(units)
                ]
            context = "\n".join(_insert_lines(lines, needles, rng))
        asked = rng.sample(range(num_keys), self.num_queries)
        answers = [v for i in asked for v in values[i]]
        singular = self.num_queries * self.num_values == 1
        template = NIAH_SINGULAR if singular else NIAH_PLURAL
        kind = self.value_type[:-1] if singular else self.value_type
        return template.format(kind=kind, context=context, query=listed([keys[i] for i in asked])), answers


def _vt_context(rng: random.Random, noise_units: int, chains: list[list[str]]) -> str:
    """Noise blocks with each chain's lines inserted in order at random positions, newline-joined."""
    lines = [NOISE] * noise_units
    for chain in chains:
        for offset, position in enumerate(sorted(rng.sample(range(len(lines)), len(chain)))):
            lines.insert(position + offset, chain[offset])
    return "\n".join(lines)


def _vt_prompt(
    rng: random.Random, noise_units: int, hops: int, chains: int, name_len: int
) -> tuple[str, list[str]]:
    size = hops + 1
    names: list[str] = []
    while len(names) < chains * size:
        name = "".join(rng.choices(ascii_uppercase, k=name_len))
        names += [] if name in names else [name]
    groups = [names[c * size : (c + 1) * size] for c in range(chains)]
    value = str(rng.randint(10000, 99998))
    lines = [
        # RULER writes the first line without a period and each hop with a trailing space.
        [f"VAR {g[0]} = {value if c == 0 else rng.randint(10000, 99998)}"]
        + [f"VAR {b} = VAR {a} " for a, b in itertools.pairwise(g)]
        for c, g in enumerate(groups)
    ]
    context = _vt_context(rng, noise_units, lines)
    return VT_TEMPLATE.format(context=context, value=value, count=size), groups[0]


@dataclass(frozen=True)
class VariableTracking(RulerTask):
    """VT: ``num_chains`` chains ``VAR X = 12345``, ``VAR Y = VAR X ``... of ``num_hops`` hops in
    the noise haystack (unit: a noise block); the answer is every variable of the first chain.

    One worked example comes first, as in RULER: the same task fitted to 500 tokens, with
    3-letter names, followed by its answer."""

    num_chains: int = 1
    num_hops: int = 4
    max_new_tokens: int = 30
    metric: str = "all"
    needs: str | None = None
    example_tokens: int = 500

    def fewest(self) -> int:
        return self.num_hops + 1  # a noise block per assignment

    def step(self, slot: Slot) -> int:
        return 5 if slot.length < 4096 else 10

    def _example(self, rng: random.Random, m: Materials) -> str:
        hops = min(10, self.num_hops)
        if "vt_example" not in m.memo:  # its noise size, fitted once (RULER: 5 blocks if none fits)
            probe = random.Random("vt-example")

            def count_at(units: int) -> int:
                return m.count(_vt_prompt(random.Random(probe.random()), units, hops, self.num_chains, 3)[0])

            m.memo["vt_example"] = (
                largest_fitting(count_at, self.example_tokens, self.fewest()) or self.fewest()
            )
        text, answer = _vt_prompt(rng, m.memo["vt_example"], hops, self.num_chains, 3)
        return f"{text} {' '.join(answer)}\n"

    def prompt(self, rng: random.Random, units: int, slot: Slot, m: Materials) -> tuple[str, list[str]]:
        example = self._example(rng, m)
        text, answers = _vt_prompt(rng, units, self.num_hops, self.num_chains, 5)
        return f"{example}\n{text}", answers


def _numbered(words: list[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


@dataclass(frozen=True)
class CommonWords(RulerTask):
    """CWE: 10 words ``freq_common`` times each among others ``freq_uncommon`` times each, shuffled
    and numbered (unit: a distinct word). One worked example first (40 words, 10 and 3 times);
    below 4096 tokens RULER shrinks both (example 20 words, 3 and 1; task 6 and 1)."""

    freq_common: int = 30
    freq_uncommon: int = 3
    num_common: int = 10
    max_new_tokens: int = 120
    metric: str = "all"
    needs: str | None = None

    def fewest(self) -> int:
        return self.num_common

    def step(self, slot: Slot) -> int:
        return 10

    def search(self, count_at: Callable[[int], int], slot: Slot) -> int | None:
        """RULER's binary search, within the word list; a length it cannot fill is refused."""
        pool = len(english_words())
        size = largest_fitting(
            lambda n: count_at(n) if n <= pool else slot.budget + 1, slot.budget, self.fewest()
        )
        if size == pool:
            raise ConfigError(
                "eval.ruler.lengths",
                f"{slot.length} tokens take more words than the {pool} of the cwe word list",
            )
        return size

    def _list(self, rng: random.Random, n: int, common: int, uncommon: int) -> tuple[str, list[str]]:
        words = rng.sample(english_words(), n)
        listing = words[: self.num_common] * common + words[self.num_common :] * uncommon
        rng.shuffle(listing)
        return _numbered(listing), words[: self.num_common]

    def prompt(self, rng: random.Random, units: int, slot: Slot, m: Materials) -> tuple[str, list[str]]:
        short = slot.length < 4096
        context, answer = self._list(rng, 20, 3, 1) if short else self._list(rng, 40, 10, 3)
        example = f"{CWE_TEMPLATE.format(context=context)} {_numbered(answer)}"
        frequencies = (6, 1) if short else (self.freq_common, self.freq_uncommon)
        context, answers = self._list(rng, units, *frequencies)
        return f"{example}\n{CWE_TEMPLATE.format(context=context)}", answers


@lru_cache(maxsize=8)
def _zeta(alpha: float) -> float:
    import mpmath

    return float(mpmath.zeta(alpha))


@dataclass(frozen=True)
class FrequentWords(RulerTask):
    """FWE: coded 6-letter words with Zipf counts floor(n k^-alpha / zeta(alpha)) for rank k, the
    top rank written as '...' (noise); the answer is ranks 2-4 (unit: n). Vocabulary: budget / 50
    words. RULER sizes n by growing it in steps of budget / 32 from budget / 6."""

    alpha: float = 2.0
    word_length: int = 6
    max_new_tokens: int = 50
    metric: str = "all"
    needs: str | None = None

    def step(self, slot: Slot) -> int:
        return max(1, slot.budget // 32)

    def search(self, count_at: Callable[[int], int], slot: Slot) -> int | None:
        """RULER's FWE search: grow n from budget / 6 by steps until the prompt reaches the budget."""
        n, step = slot.budget // 6, self.step(slot)
        while count_at(n) < slot.budget:
            n += step
        return n - step if n - step > 0 else None

    def prompt(self, rng: random.Random, units: int, slot: Slot, m: Materials) -> tuple[str, list[str]]:
        size = max(4, slot.budget // 50)
        vocab: set[str] = set()
        while len(vocab) < size:
            vocab.add("".join(rng.choices(ascii_lowercase, k=self.word_length)))
        ranked = sorted(vocab)
        rng.shuffle(ranked)
        ranked[0] = "..."
        zeta = _zeta(self.alpha)
        words = [w for k, w in enumerate(ranked, 1) for _ in range(int(units * k**-self.alpha / zeta))]
        rng.shuffle(words)
        return FWE_TEMPLATE.format(context=" ".join(words)), ranked[1:4]


@dataclass(frozen=True)
class QuestionAnswering(RulerTask):
    """QA: a SQuAD or HotpotQA question over its gold documents and distractors (unit: a document),
    shuffled and numbered. Sample i asks question i of the file, as RULER does. Scored by
    string-match-part: any one reference found counts."""

    dataset: str
    max_new_tokens: int = 32
    metric: str = "part"

    @property
    def needs(self) -> str:
        return self.dataset

    def step(self, slot: Slot) -> int:
        return 10

    def prompt(self, rng: random.Random, units: int, slot: Slot, m: Materials) -> tuple[str, list[str]]:
        qa = m.qa[self.dataset]
        question = qa.questions[slot.index]
        gold, related = question.gold, question.related
        if units >= len(qa.documents):
            chosen = [qa.documents[i % len(qa.documents)] for i in range(units)]
        else:
            if units - len(gold) > len(related):
                taken = set(gold) | set(related)
                others = [i for i in range(len(qa.documents)) if i not in taken]
                picked = gold + related + rng.sample(others, max(0, units - len(gold) - len(related)))
            else:
                picked = gold + rng.sample(related, max(0, units - len(gold)))
            chosen = [qa.documents[i] for i in picked]
        rng.shuffle(chosen)
        context = "\n\n".join(f"Document {i + 1}:\n{doc}" for i, doc in enumerate(chosen))
        return QA_TEMPLATE.format(context=context, query=question.query), list(question.answers)


Task = Needle | VariableTracking | CommonWords | FrequentWords | QuestionAnswering

# RULER's task set, with its parameters (synthetic.yaml) and generation lengths (constants.py).
TASKS: dict[str, Task] = {
    "niah_single_1": Needle("noise"),
    "niah_single_2": Needle("essay"),
    "niah_single_3": Needle("essay", value_type="uuids"),
    "niah_multikey_1": Needle("essay", num_keys=4),
    "niah_multikey_2": Needle("needle"),
    "niah_multikey_3": Needle("needle", key_type="uuids", value_type="uuids"),
    "niah_multivalue": Needle("essay", num_values=4),
    "niah_multiquery": Needle("essay", num_queries=4),
    "vt": VariableTracking(),
    "cwe": CommonWords(),
    "fwe": FrequentWords(),
    "qa_1": QuestionAnswering("squad"),
    "qa_2": QuestionAnswering("hotpotqa"),
}
