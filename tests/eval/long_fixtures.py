"""Local data files in the official formats of LongBench v2 (data.json) and BABILong (the hub's
parquet layout), shared by their benchmark tests and the command-line test."""

from __future__ import annotations

import json
from pathlib import Path

# id, domain, difficulty, length, answer, the generated response (official protocol), lm-eval's pick (lm_eval protocol)
QUESTIONS = [
    ("q0", "Single-Document QA", "easy", "short", "A", "The correct answer is (A)", "A"),
    ("q1", "Single-Document QA", "easy", "medium", "B", "**The correct answer is (B)**", "C"),
    ("q2", "Multi-Document QA", "hard", "long", "C", "The correct answer is (C)", "C"),
    ("q3", "Multi-Document QA", "hard", "short", "D", "The correct answer is: D", "D"),
    ("q4", "Long In-context Learning", "hard", "medium", "A", "I think the answer is A.", "B"),
    ("q5", "Code Repository Understanding", "easy", "long", "B", "The correct answer is B, since", "B"),
    ("q6", "Long-dialogue History Understanding", "hard", "short", "C", "", "A"),
    ("q7", "Long Structured Data Understanding", "hard", "long", "A", "the correct answer is (a)", "A"),
]
LONG_CONTEXT = "q7"  # its context is longer than the tiny model's prompt budget: cut in the middle


def record(qid, domain, difficulty, length, answer) -> dict:
    words = 900 if qid == LONG_CONTEXT else 20
    return {
        "_id": qid,
        "domain": domain,
        "sub_domain": "fixture",
        "difficulty": difficulty,
        "length": length,
        "question": f" Question {qid}: which river flows north? ",
        "choice_A": "the Alder ",
        "choice_B": "the Brill",
        "choice_C": "the Cole",
        "choice_D": "the Dane",
        "answer": answer,
        "context": "\n" + " ".join(f"river{(i * 7) % 31}" for i in range(words)) + "\n",
    }


def write_longbench_v2(path: Path) -> Path:
    """The official data.json layout: one JSON list of records."""
    path.write_text(json.dumps([record(*q[:5]) for q in QUESTIONS]))
    return path


PLACES = ("kitchen", "garden", "hallway")


def rows(qa: str, length: str) -> list[dict]:
    return [
        {
            "input": f"Some book text. Mary{qa}{length}{i} went to the {PLACES[i]}. More book text.",
            "question": f"Where is Mary{qa}{length}{i}?",
            "target": PLACES[i],
        }
        for i in range(3)
    ]


def write_babilong(root: Path) -> Path:
    """RMT-team/babilong-1k-samples' layout: <length>/<qa>-00000-of-00001.parquet (qa1 and qa2
    at 0k and 1k; qa2 at 1k in the parquet-converter layout <length>/<qa>/0000.parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for length in ("0k", "1k"):
        for qa in ("qa1", "qa2"):
            if (qa, length) == ("qa2", "1k"):
                path = root / length / qa / "0000.parquet"
            else:
                path = root / length / f"{qa}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows(qa, length)), path)
    return root
