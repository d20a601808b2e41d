"""LongBench v2's scoring, as the official ``pred.py`` and ``result.py`` (THUDM/LongBench, v2).

Official protocol: the answer is the letter of the first "The correct answer is (X)" in the
response with its asterisks removed, else of the first "The correct answer is X" (X in A-D);
otherwise there is no answer, which is wrong (with ``compensated``, worth 0.25, the official
switch). lm_eval protocol: lm-eval's pick, the letter of the highest log-likelihood after
"Answer:" (never unanswered). Either way lm-eval's per-question ``acc`` is the judgement.

Reported as the official leaderboard: accuracy x 100 overall, on easy and hard questions and on
short, medium and long contexts (the official result.py rounds these to one decimal), plus
each domain. ``longbench_v2/predictions.jsonl`` holds the records in the official pred.py format
and ``longbench_v2/result.txt`` the official result.py line for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dprope.eval.common import BenchmarkResult, markdown_table

COLUMNS = ("overall", "easy", "hard", "short", "medium", "long")
OFFICIAL_FIELDS = (  # a record of the official pred.py, in its order (then response, pred, judge)
    "_id",
    "domain",
    "sub_domain",
    "difficulty",
    "length",
    "question",
    "choice_A",
    "choice_B",
    "choice_C",
    "choice_D",
    "answer",
    "context",
)
_ANSWER = (re.compile(r"The correct answer is \(([A-D])\)"), re.compile(r"The correct answer is ([A-D])"))


def extract_answer(response: str) -> str | None:
    """The official answer extraction (see the module docstring); None when there is no answer."""
    text = response.replace("*", "")
    for pattern in _ANSWER:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def judge(response: str, answer: str, compensated: bool = False) -> float:
    """1 when the extracted letter is the answer, 0 otherwise (0.25 unanswered with ``compensated``)."""
    pred = extract_answer(response.strip())
    if pred is None and compensated:
        return 0.25
    return float(pred == answer)


def breakdown(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Accuracy x 100 of the records' ``score`` overall, by difficulty and by length (an empty
    group is NaN)."""

    def accuracy(rows: list[Mapping[str, Any]]) -> float:
        return 100.0 * sum(r["score"] for r in rows) / len(rows) if rows else float("nan")

    groups = {
        "overall": list(records),
        "easy": [r for r in records if r["difficulty"] == "easy"],
        "hard": [r for r in records if r["difficulty"] != "easy"],  # as result.py: not easy is hard
        "short": [r for r in records if r["length"] == "short"],
        "medium": [r for r in records if r["length"] == "medium"],
        "long": [r for r in records if r["length"] not in ("short", "medium")],
    }
    return {name: accuracy(rows) for name, rows in groups.items()}


def by_domain(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    domains = dict.fromkeys(r["domain"] for r in records)
    return {
        d: 100.0
        * sum(r["score"] for r in records if r["domain"] == d)
        / sum(r["domain"] == d for r in records)
        for d in domains
    }


def official_files(
    records: Sequence[Mapping[str, Any]], docs: Mapping[str, Mapping[str, Any]], contexts: Mapping[str, str]
) -> dict[str, str]:
    """``predictions.jsonl`` as the official pred.py writes it (its fields, ``context`` cut to 1000
    characters) and ``result.txt`` as the official result.py prints it for that file."""
    lines = []
    for r in records:
        doc = docs[r["_id"]]
        item = {k: doc[k] for k in OFFICIAL_FIELDS if k != "context"} | {"context": contexts[r["_id"]]}
        item.update({"response": r["response"], "pred": r["pred"], "judge": r["pred"] == r["answer"]})
        lines.append(json.dumps(item, ensure_ascii=False))
    scores = breakdown([{**r, "score": float(r["pred"] == r["answer"])} for r in records])
    row = "\t".join(["predictions", *(str(round(scores[c], 1)) for c in COLUMNS)])
    header = "Model\tOverall\tEasy\tHard\tShort\tMedium\tLong"
    return {
        "longbench_v2/predictions.jsonl": "\n".join(lines) + "\n",
        "longbench_v2/result.txt": f"{header}\n{row}",
    }


def score_samples(
    samples: Sequence[Mapping[str, Any]], protocol: str, compensated: bool, truncated: int
) -> BenchmarkResult:
    """The result from lm-eval's logged samples (each with its ``doc``, ``acc`` and responses)."""
    records = []
    for sample in samples:
        doc = sample["doc"]
        if protocol == "official":
            response = str(_first(sample["resps"])).strip()
            pred = extract_answer(response)
        else:  # lm-eval's multiple choice: the letter of the largest log-likelihood
            lls = [float(_first(r)) for r in sample["resps"]]
            response, pred = None, "ABCD"[max(range(len(lls)), key=lls.__getitem__)]
        records.append(
            {
                **{k: doc[k] for k in ("_id", "domain", "sub_domain", "difficulty", "length", "answer")},
                "response": response,
                "pred": pred,
                "score": float(sample["acc"]),
            }
        )
    summary = breakdown(records)
    unanswered = sum(r["pred"] is None for r in records)
    domains = by_domain(records)
    markdown = (
        "Accuracy (x100) as the official leaderboard: overall, by difficulty and by context length"
        f" ({_how(protocol, compensated)}):\n\n"
    )
    markdown += markdown_table(["", *COLUMNS], [["accuracy", *(summary[c] for c in COLUMNS)]], 1)
    markdown += "\n\nBy domain:\n\n" + markdown_table(
        ["domain", "accuracy", "questions"],
        [[d, v, sum(r["domain"] == d for r in records)] for d, v in domains.items()],
        1,
    )
    markdown += (
        f"\n\nQuestions: {len(records)}; unanswered: {unanswered}; prompts cut in the middle: {truncated}."
    )
    details = {
        "protocol": protocol,
        "compensated": compensated,
        "questions": len(records),
        "unanswered": unanswered,
        "truncated": truncated,
        "domains": domains,
        "counts": {c: _count(records, c) for c in COLUMNS},
    }
    return BenchmarkResult("longbench_v2", summary, details, records, markdown)


def _first(value: Any) -> Any:
    """The first element of lm-eval's nested response lists ([[text]] or [[ll, greedy]])."""
    while isinstance(value, (list, tuple)):
        value = value[0]
    return value


def _count(records, column: str) -> int:
    if column == "overall":
        return len(records)
    key = "difficulty" if column in ("easy", "hard") else "length"
    return sum(r[key] == column for r in records)


def _how(protocol: str, compensated: bool) -> str:
    if protocol == "lm_eval":
        return "lm-eval's longbench2: the letter with the highest log-likelihood"
    return "generated answer, official extraction" + ("; unanswered = 0.25" if compensated else "")
