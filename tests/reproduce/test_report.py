"""The report's verdict on retrieval: comparisons when the task was learned within L, only the
range of the accuracies when it was not (per-seed values chosen by hand)."""

from __future__ import annotations

import pytest

from dprope.reproduce import Reproduction
from dprope.reproduce.report import verdict_text
from tests.reproduce.conftest import compose_plain, miniature


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    return Reproduction.from_plain(compose_plain(miniature(root / "run", root)))  # L = 48, s x L = 96


def entries(within: float, beyond: dict[str, float]) -> dict:
    """Three seeds per strategy: perplexity 9 + i, retrieval ``within`` at 48 and ``beyond[name]`` at 96."""
    return {
        name: {
            "by_seed": {
                seed: {
                    "perplexity": {"48": 9.0 + seed, "96": 9.0 + seed + (name == "pi")},
                    "retrieval": {"48": within, "96": accuracy + 0.01 * seed},
                }
                for seed in range(3)
            }
        }
        for name, accuracy in beyond.items()
    }


def test_retrieval_not_learned_within_L_gives_its_range_not_comparisons(repro):
    near_chance = entries(0.01, {"none": 0.0, "pi": 0.0, "yarn": 0.01, "dprope": 0.02})
    text = verdict_text(repro, {"free": near_chance, "tuned": near_chance})
    assert "Retrieval within L = 48: the pre-trained model finds the key in 1.0% of the prompts" in text
    assert "not learned at this budget" in text
    # means over the 3 seeds: none 1.0%, pi 1.0% ... dprope 3.0%; the lowest first
    assert (
        "Retrieval at 96: every strategy between 1.0% (none, training-free) and 3.0% (dprope, training-free)"
        in text
    )
    assert "exact match" not in text  # no per-pair retrieval sentence


def test_retrieval_learned_within_L_is_compared_pair_by_pair(repro):
    learned = entries(0.9, {"none": 0.1, "pi": 0.2, "yarn": 0.3, "dprope": 0.5})
    text = verdict_text(repro, {"free": learned, "tuned": learned})
    assert "finds the key in 90.0% of the prompts" in text and text.count("so the task was learned.") == 1
    assert "Retrieval at 96 (fine-tuned, exact match): DPRoPE 51.0%, YaRN 31.0%, PI 21.0%" in text
    assert "DPRoPE − YaRN = +20.0 [+20.0, +20.0] points: better" in text
    assert "every strategy between" not in text
