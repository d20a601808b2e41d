"""The verdict's words follow from the paired intervals: entries with known per-seed values."""

from __future__ import annotations

import pytest

from dprope.reproduce.results import Measurement
from dprope.reproduce.synthetic import chance_accuracy
from dprope.reproduce.verdict import compare, learned_sentence, verdict_paragraph

PPL = Measurement(("perplexity", "512"), "PPL @ 512", True)
RETRIEVAL = Measurement(("retrieval", "512"), "retrieval @ 512", False, 100.0, 1)


def entries(**values: list[float]) -> dict:
    """Strategy -> per-seed perplexity at 512 (retrieval: 1 / perplexity, any number will do)."""
    return {
        name: {
            "by_seed": {
                seed: {"perplexity": {"512": v}, "retrieval": {"512": 1 / v}} for seed, v in enumerate(seq)
            }
        }
        for name, seq in values.items()
    }


# DPRoPE - YaRN = -0.4, -0.5, -0.6: mean -0.5, sd 0.1, t(0.975, 2) = 4.3027: [-0.748, -0.252]
# YaRN - PI = -3, -2, -4: mean -3, sd 1: [-5.484, -0.516]
TUNED = entries(dprope=[7.0, 7.0, 7.0], yarn=[7.4, 7.5, 7.6], pi=[10.4, 9.5, 11.6])
# DPRoPE - YaRN = 0.1, -0.1, 0.3: mean 0.1, sd 0.2: [-0.397, +0.597]
# YaRN - PI = 2, 2.2, 1.8: mean 2, sd 0.2: [+1.503, +2.497] (PI better)
FREE = entries(dprope=[9.1, 8.9, 9.3], yarn=[9.0, 9.0, 9.0], pi=[7.0, 6.8, 7.2])


def test_comparison_intervals():
    c = compare(TUNED, "fine-tuned", PPL, "dprope", "yarn")
    assert c.mean_a == pytest.approx(7.0) and c.mean_b == pytest.approx(7.5)
    assert (c.interval.low, c.interval.high) == (
        pytest.approx(-0.7484, abs=1e-3),
        pytest.approx(-0.2516, abs=1e-3),
    )
    assert c.word == "better"
    assert compare(FREE, "training-free", PPL, "yarn", "pi").word == "worse"
    assert compare(FREE, "training-free", PPL, "dprope", "yarn").word == "not distinguishable at this scale"
    assert compare(FREE, "training-free", PPL, "dprope", "ntk") is None  # not measured
    # the same differences read as accuracy: higher is better, so lower is worse
    assert compare(TUNED, "fine-tuned", RETRIEVAL, "dprope", "yarn").word == "better"  # 1/7 > 1/7.5


def test_only_the_seeds_both_finished_are_paired():
    partial = entries(dprope=[7.0, 7.0, 7.0], yarn=[7.4, 7.5, 7.6])
    del partial["yarn"]["by_seed"][1]
    c = compare(partial, "fine-tuned", PPL, "dprope", "yarn")
    assert c.interval.differences == pytest.approx([-0.4, -0.6])


def test_verdict_paragraph_words_each_link_from_its_interval():
    text = verdict_paragraph(
        (
            compare(TUNED, "fine-tuned", PPL, "dprope", "yarn"),
            compare(TUNED, "fine-tuned", PPL, "yarn", "pi"),
        ),
        (compare(FREE, "free", PPL, "dprope", "yarn"), compare(FREE, "free", PPL, "yarn", "pi")),
        [
            (
                "Retrieval at 512",
                [compare(TUNED, "fine-tuned", RETRIEVAL, "dprope", b) for b in ("yarn", "pi")],
            )
        ],
        512,
    )
    assert text.startswith("**Verdict.** Fine-tuned perplexity at s x L = 512 (the paper's Table 1): ")
    assert "DPRoPE 7.00, YaRN 7.50, PI 10.50 (means over 3 seeds)" in text
    assert "DPRoPE − YaRN = -0.50 [-0.75, -0.25]: better" in text
    assert (
        "YaRN − PI = -3.00 [-5.48, -0.52]: better. So the paper's ordering ours < YaRN < PI is reproduced."
        in text
    )
    free = text[text.index("Training-free perplexity at 512 (the paper's Table 10)") :]
    assert "DPRoPE − YaRN = +0.10 [-0.40, +0.60]: not distinguishable at this scale" in free
    assert "YaRN − PI = +2.00 [+1.50, +2.50]: worse" in free
    assert "So reversed: PI better than YaRN; not distinguishable at this scale: DPRoPE vs YaRN." in free
    # 1/7 = 14.29%; mean(1/7.4, 1/7.5, 1/7.6) = 13.34%; mean(1/10.4, 1/9.5, 1/11.6) = 9.59%
    assert "Retrieval at 512: DPRoPE 14.3%, YaRN 13.3%, PI 9.6%; DPRoPE − YaRN = +1.0 [" in text
    assert "points: better" in text


def test_verdict_paragraph_without_measurements_says_so():
    text = verdict_paragraph((None, None), (None, None), [("Retrieval at 512", [None, None])], 512)
    assert "Fine-tuned perplexity at s x L = 512 (the paper's Table 1): not measured." in text
    assert "Retrieval at 512: not measured." in text


def test_retrieval_within_L_is_learned_only_well_above_chance():
    chance = chance_accuracy(2)
    assert chance == pytest.approx(1 / 260)  # a digit, then a capital
    assert chance_accuracy(3) == pytest.approx(1 / 2600)
    near = learned_sentence([0.01, 0.0, 0.02], 128, chance)
    assert near.startswith(
        "Retrieval within L = 128: the pre-trained model finds the key in 1.0% of the prompts"
    )
    assert "(mean over 3 seeds; chance 0.4%)" in near and "not learned at this budget" in near
    assert learned_sentence([0.9, 0.5], 128, chance).endswith("so the task was learned.")
    # 10 x chance = 3.85%: 3.8% is not learned, 3.9% is
    assert "not learned" in learned_sentence([0.038], 128, chance)
    assert learned_sentence([0.039], 128, chance).endswith("learned.")
    assert "not learned" not in learned_sentence([0.039], 128, chance)
    assert learned_sentence([], 128, chance) == "Retrieval within L = 128: not measured."
    text = verdict_paragraph((None, None), (None, None), [("Retrieval at 512", [None, None])], 512, near)
    assert text.index("Retrieval within L = 128") < text.index("Retrieval at 512: not measured.")
