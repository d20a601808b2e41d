"""LongBench's metrics (THUDM/LongBench ``metrics.py``), each ``(prediction, ground_truth,
all_classes) -> score in [0, 1]``; a sample scores the best over its reference answers.

- ``qa_f1``: token-level F1 after SQuAD normalisation (lower case, no punctuation, no articles).
- ``rouge_l``: ROUGE-L F of the ``rouge`` package (1.0.1, the one the official requirements
  install): sentences split on ".", union-LCS over whitespace tokens, case and punctuation
  kept. Any exception of that package scores 0, as the official bare ``except`` does: an empty
  prediction (ValueError) and a long one whose recursive LCS exceeds Python's recursion limit
  (RecursionError) both score 0.
- ``classification``: the classes named in the prediction, minus those that are only a part of
  the reference class; 1/k if the reference is among the k left, else 0. The official code
  removes from the list it is iterating over, so the class right after a removed one escapes
  removal; that is reproduced by default (`classification`), and `classification_fixed` removes
  every such class (``eval.longbench_e.classification_fix=true``).
- ``retrieval``: the share of the numbers in the prediction that equal the reference paragraph's.
- ``count``: the share of the numbers in the prediction that equal the reference count.
- ``code_sim``: the first generated line that is not a comment or code fence, compared with the
  reference by ``fuzzywuzzy.fuzz.ratio`` / 100: difflib's SequenceMatcher ratio, rounded to an
  integer percentage, 0 when either string is empty (fuzzywuzzy 0.18 without python-Levenshtein,
  as the official requirements install it).
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
def _rouge():
    from rouge import Rouge

    return Rouge(metrics=["rouge-l"])


def rouge_l(prediction: str, ground_truth: str, all_classes: Sequence[str] = ()) -> float:
    try:
        return float(_rouge().get_scores([prediction], [ground_truth], avg=True)["rouge-l"]["f"])
    except Exception:  # noqa: BLE001 - the official scorer gives 0 on any failure (RecursionError included)
        return 0.0


def _is_part_of_reference(name: str, ground_truth: str) -> bool:
    return name in ground_truth and name != ground_truth


def classification(prediction: str, ground_truth: str, all_classes: Sequence[str] = ()) -> float:
    """Official behaviour: a removal while iterating shifts the list, so the candidate that
    follows a removed one is never examined (and stays)."""
    named = [c for c in all_classes if c in prediction]
    i = 0
    while i < len(named):
        if _is_part_of_reference(named[i], ground_truth):
            named.remove(named[i])  # list.remove: the first equal item, as the official loop
        i += 1
    return 1.0 / len(named) if ground_truth in named else 0.0


def classification_fixed(prediction: str, ground_truth: str, all_classes: Sequence[str] = ()) -> float:
    """Every class that is only a part of the reference is removed."""
    named = [c for c in all_classes if c in prediction and not _is_part_of_reference(c, ground_truth)]
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


@lru_cache(maxsize=1)
def _fuzz():
    import warnings

    with warnings.catch_warnings():  # "using slow pure-python SequenceMatcher": that is the official path
        warnings.simplefilter("ignore")
        from fuzzywuzzy import fuzz
    return fuzz


def code_sim(prediction: str, ground_truth: str, all_classes: Sequence[str] = ()) -> float:
    return _fuzz().ratio(first_code_line(prediction), ground_truth) / 100.0


METRICS: dict[str, Metric] = {
    "qa_f1": qa_f1,
    "rouge_l": rouge_l,
    "classification": classification,
    "classification_fixed": classification_fixed,
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
