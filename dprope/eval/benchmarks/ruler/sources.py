"""What RULER's generators read besides a random seed: word lists, the essay haystack, QA sets.

Keys of the NIAH tasks are adjective-noun pairs and the words of common-words extraction are real
English nouns, adjectives and verbs, both from the lists shipped with the `wonderwords` package
(as in RULER, Hsieh et al., 2024). The essay haystack is a plain-text file (RULER uses Paul
Graham's essays, which cannot be fetched here), or the evaluation documents of a data preset.
The QA tasks read SQuAD 2.0 dev (``qa_1``) and HotpotQA dev distractor (``qa_2``) JSON files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from dprope.config import ConfigError
from dprope.inputs import read_text


@lru_cache(maxsize=1)
def _wonderwords() -> dict[str, list[str]]:
    from wonderwords import RandomWord

    words = RandomWord()
    return {c: words.filter(include_categories=[c]) for c in ("noun", "adjective", "verb")}


def key_parts() -> tuple[list[str], list[str]]:
    """(adjectives, nouns): a NIAH key is ``f"{adjective}-{noun}"``, uniform over the pairs."""
    lists = _wonderwords()
    return lists["adjective"], lists["noun"]


@lru_cache(maxsize=1)
def english_words() -> list[str]:
    """The distinct nouns, adjectives and verbs, sorted: the pool of common-words extraction."""
    return sorted({w for words in _wonderwords().values() for w in words})


def read_words(path: str, field: str) -> list[str]:
    """A text file as its whitespace-separated words, as RULER cuts its essay haystack."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(field, f"{path} does not exist or is not a file")
    words = re.sub(r"\s+", " ", read_text(file, field)).strip().split(" ")  # binary or not UTF-8: named
    if len(words) < 2:
        raise ConfigError(field, f"{path} holds no text to build a haystack from")
    return words


def words_from_data(data, split: str, field: str, limit: int) -> list[str]:
    """The first ``limit`` words of a data preset's evaluation ``split`` (documents in source order)."""
    from dprope.data.sources import load_documents

    if split not in data.eval_splits:
        raise ConfigError(
            field, f"{split!r} is not an evaluation split of data={data.name} ({', '.join(data.eval_splits)})"
        )
    words: list[str] = []
    for row in load_documents(data, split, field):
        words += row["text"].split()
        if len(words) >= limit:
            break
    if len(words) < 2:
        raise ConfigError(
            field, f"split {split!r} of data={data.name} holds no text to build a haystack from"
        )
    return words[:limit]


# A sentence ends at ., ! or ? (with closing quotes or brackets) followed by a space; RULER uses
# NLTK's punkt model, whose data cannot be installed from the package index, so abbreviations
# such as "e.g. the" may split here where punkt would not. Only the needle positions move.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]])) ")


def split_sentences(text: str) -> list[str]:
    """``text`` (single-spaced) cut into sentences; ``" ".join`` of the result gives it back."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


@dataclass
class Question:
    query: str
    answers: list[str]
    gold: list[int]  # indices into QASet.documents of the documents that answer it
    related: list[int]  # other paragraphs of the same article (SQuAD), added first as distractors


@dataclass
class QASet:
    questions: list[Question]
    documents: list[str]  # distinct documents, sorted


def _load_json(path: str, field: str):
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(field, f"{path} does not exist or is not a file")
    try:
        return json.loads(read_text(file, field))
    except json.JSONDecodeError as err:
        raise ConfigError(field, f"{path} is not JSON ({err})") from None


def read_squad(path: str, field: str) -> QASet:
    """SQuAD 2.0 (dev-v2.0.json): every answerable question, its paragraph as the gold document."""
    data = _load_json(path, field)
    try:
        docs = sorted({p["context"] for article in data["data"] for p in article["paragraphs"]})
        index = {d: i for i, d in enumerate(docs)}
        questions = []
        for article in data["data"]:
            article_docs = [index[p["context"]] for p in article["paragraphs"]]
            for p in article["paragraphs"]:
                gold = index[p["context"]]
                questions += [
                    Question(
                        q["question"],
                        [a["text"] for a in q["answers"]],
                        [gold],
                        [d for d in article_docs if d != gold],
                    )
                    for q in p["qas"]
                    if not q.get("is_impossible", False)
                ]
    except (KeyError, TypeError) as err:
        raise ConfigError(field, f"{path} is not in the SQuAD format (missing {err})") from None
    return _checked(QASet(questions, docs), path, field)


def read_hotpotqa(path: str, field: str) -> QASet:
    """HotpotQA (hotpot_dev_distractor_v1.json): a document is ``title\\n`` + its sentences joined."""
    data = _load_json(path, field)
    try:

        def doc(title: str, sentences: list[str]) -> str:
            return f"{title}\n{''.join(sentences)}"

        docs = sorted({doc(t, s) for item in data for t, s in item["context"]})
        index = {d: i for i, d in enumerate(docs)}
        questions = [
            Question(item["question"], [item["answer"]], [index[doc(t, s)] for t, s in item["context"]], [])
            for item in data
        ]
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(field, f"{path} is not in the HotpotQA format ({err})") from None
    return _checked(QASet(questions, docs), path, field)


def _checked(qa: QASet, path: str, field: str) -> QASet:
    if not qa.questions:
        raise ConfigError(field, f"{path} holds no answerable question")
    return qa
