"""A fixed set of official-format LongBench-E predictions (one file per dataset), whose scores
were computed with the official scorer; shared by the parity and re-scoring tests."""

from __future__ import annotations

import json
from pathlib import Path

from dprope.eval.benchmarks.longbench_e.tasks import TASKS, official_name

LENGTHS = (1000, 3000, 5000, 9000)  # two samples in 0-4k, one in 4-8k, one in 8k+
TREC_CLASSES = ["Art", "Arts", "Arts and crafts", "Location", "Human", "Human being", "Entity"]
# "Art" and "Arts" are both parts of "Arts and crafts": the official loop removes "Art" and skips
# "Arts", so even the right answer scores 1/2. The oracle set leaves "Art" out.
ORACLE_CLASSES = TREC_CLASSES[1:]

BY_METRIC = {  # (answers, four predictions)
    "qa_f1": (["the town of Brill"], ["Brill", "Brill is a town", "unanswerable", "The town of Brill."]),
    "rouge_l": (
        ["The dam failed, officials said. Repairs cost $2 million."],
        [
            "Officials said the dam failed. Repairs will cost $2 million.",
            "the dam failed. repairs cost $2 million",
            "",
            "The dam failed, officials said. Repairs cost $2 million.\nMore text follows here.",
        ],
    ),
    "classification": (
        ["Arts and crafts"],
        ["Arts and crafts", "Location", "Human being or Arts and crafts", "\nArts and crafts\nLocation"],
    ),
    "count": (["7"], ["7", "There are 7 or 8", "none", "7, 7, 3"]),
    "retrieval": (["Paragraph 12"], ["Paragraph 12", "Paragraph 1", "Paragraph 12 and Paragraph 3", "12"]),
    "code_sim": (
        ["x = add(1,2)"],
        ["x = add(1, 2)", "```python\n# sum\nx = add(1,2)\n", "for i in range(10):", "    x = add(1, 2)"],
    ),
}


def prediction_lines(dataset: str, oracle: bool = False) -> list[dict]:
    answers, preds = BY_METRIC[TASKS[dataset].metric]
    classes = (ORACLE_CLASSES if oracle else TREC_CLASSES) if dataset == "trec_e" else None
    return [
        {"pred": answers[0] if oracle else pred, "answers": answers, "all_classes": classes, "length": length}
        for pred, length in zip(preds, LENGTHS, strict=True)
    ]


def write_predictions(directory: Path, oracle: bool = False) -> Path:
    """``directory/<dataset>.jsonl`` for the 13 datasets, named as the official pred.py names them."""
    directory.mkdir(parents=True, exist_ok=True)
    for dataset in TASKS:
        lines = prediction_lines(dataset, oracle)
        (directory / f"{official_name(dataset)}.jsonl").write_text(
            "".join(json.dumps(x) + "\n" for x in lines)
        )
    return directory
