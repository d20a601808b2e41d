"""LongBench's metrics (THUDM/LongBench ``metrics.py``), each ``(prediction, ground_truth,
all_classes) -> score in [0, 1]``; a sample scores the best over its reference answers.

- ``qa_f1``: token-level F1 after SQuAD normalisation (lower case, no punctuation, no articles).
- ``rouge_l``: ROUGE-L F-measure from the ``rouge-score`` package (its tokenizer lower-cases
  and keeps alphanumeric runs; the official code uses the ``rouge`` package, whose tokenization
  differs slightly, so summaries can score a little differently).
- ``classification``: the classes named in the prediction, minus those that are only a part of
  the reference class; 1/k if the reference is among the k left, else 0.
- ``retrieval``: the share of the numbers in the prediction that equal the reference paragraph's.
- ``count``: the share of the numbers in the prediction that equal the reference count.
- ``code_sim``: the first generated line that is not a comment or code fence, compared with the
  reference by ``rapidfuzz.fuzz.ratio`` / 100 (normalised Indel similarity; the official code
  uses fuzzywuzzy, which rounds the same ratio to an integer).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

Metric = Callable[[str, str, Sequence[str]], float]


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def qa_f1(prediction: str, ground_truth: str, all_classes: Sequence[str] = ()) -> float:
    predicted, reference = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    same = sum((Counter(predicted) & Counter(reference)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(reference)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, ground_truth: str, all_classes: Sequence[str] = ()) -> float:
    return _rouge_scorer().score(ground_truth, prediction)["rougeL"].fmeasure


def classification(prediction: str, ground_truth: str, all_classes: Sequence[str] = ()) -> float:
    named = [c for c in all_classes if c in prediction]
    named = [c for c in named if not (c in ground_truth and c != ground_truth)]
    return 1.0 / len(named) if ground_truth in named else 0.0


def _share_equal(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return sum(n == target for n in numbers) / len(numbers) if numbers else 0.0


def retrieval(prediction: str, ground_truth: str, all_classes: Sequence[str] = ()) -> float:
    match = re.search(r"Paragraph (\d+)", ground_truth)
    return _share_equal(prediction, match.group(1)) if match else 0.0


def count(prediction: str, ground_truth: str, all_classes: Sequence[str] = ()) -> float:
    return _share_equal(prediction, str(ground_truth).strip())


def first_code_line(prediction: str) -> str:
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            return line
    return ""


def code_sim(prediction: str, ground_truth: str, all_classes: Sequence[str] = ()) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(first_code_line(prediction), ground_truth) / 100.0


METRICS: dict[str, Metric] = {
    "qa_f1": qa_f1,
    "rouge_l": rouge_l,
    "classification": classification,
    "retrieval": retrieval,
    "count": count,
    "code_sim": code_sim,
}


def score_sample(
    metric: str, prediction: str, answers: Sequence[str], all_classes: Sequence[str] | None
) -> float:
    """The best score over the reference answers (0 when there is none)."""
    fn = METRICS[metric]
    return max((fn(prediction, answer, all_classes or ()) for answer in answers), default=0.0)
