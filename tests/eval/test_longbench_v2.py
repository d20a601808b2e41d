"""LongBench v2 through lm-eval on local files in the official format: both protocols end to end
on the tiny model with an lm-eval model whose answers are controlled (known scores), the
official answer extraction and result.py numbers on the same predictions, the prompt and its
middle cut, and bad data files."""

from __future__ import annotations

import json
import re

import pytest

from dprope.config import ConfigError
from dprope.eval.benchmarks.longbench_v2 import BENCHMARK
from dprope.eval.benchmarks.longbench_v2.config import LongBenchV2Config
from dprope.eval.benchmarks.longbench_v2.data import official_prompt, prepare_longbench_v2
from dprope.eval.benchmarks.longbench_v2.scoring import extract_answer
from dprope.eval.common import EvalContext
from tests.eval.long_fixtures import QUESTIONS, record, write_longbench_v2


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_longbench_v2(tmp_path_factory.mktemp("longbench_v2") / "data.json")


class ControlledLM:
    """An lm-eval model that answers by the question id in each prompt: the response above
    (generation) or the chosen letter (log-likelihood 0, the others -50); it records the prompts."""

    def __new__(cls):
        from lm_eval.api.model import LM

        class _LM(LM):
            def __init__(self):
                super().__init__()
                self.contexts = []

            def _qid(self, context):
                self.contexts.append(context)
                return re.search(r"Question (q\d):", context).group(1)

            def generate_until(self, requests):
                rows = {q[0]: q for q in QUESTIONS}
                return [rows[self._qid(r.args[0])][5] for r in requests]

            def loglikelihood(self, requests):
                rows = {q[0]: q for q in QUESTIONS}
                out = []
                for request in requests:
                    context, continuation = request.args
                    out.append((0.0 if continuation.strip() == rows[self._qid(context)][6] else -50.0, False))
                return out

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

        return _LM()


def run(tiny_eval_model, cfg: LongBenchV2Config, tmp_path=None):
    from dprope.eval.backends import Backends
    from dprope.eval.suite import EvalConfig, run_suite

    lm = ControlledLM()
    settings = EvalConfig(tasks=["longbench_v2"], progress=False, longbench_v2=cfg)
    report = run_suite(tiny_eval_model, settings, backends=Backends(lm_eval_model=lambda *a: lm))
    return report.benchmarks["longbench_v2"], lm


def test_official_protocol_end_to_end_scores_the_known_answers(tiny_eval_model, data_file, tmp_path):
    """Right: q0, q1 (asterisks removed), q2, q5 ("is B," still matches); unanswered: q3 (a colon),
    q4, q6 (empty), q7 (lower case). Easy 3/3, hard 1/5, short 1/3, medium 1/2, long 2/3."""
    result, lm = run(tiny_eval_model, LongBenchV2Config(data_file=str(data_file), bootstrap_iters=0))
    expected = {
        "overall": 50.0,
        "easy": 100.0,
        "hard": 20.0,
        "short": 100 / 3,
        "medium": 50.0,
        "long": 200 / 3,
    }
    assert result.summary == pytest.approx(expected)
    assert result.details["lm_eval_acc"] == pytest.approx(50.0)  # lm-eval's own aggregate agrees
    assert result.details["unanswered"] == 4 and result.details["truncated"] == 1
    assert [r["pred"] for r in result.samples] == ["A", "B", "C", None, None, "B", None, None]
    assert result.details["domains"]["Multi-Document QA"] == 50.0
    # the prompt handed to the model is the official template, cut in the middle only for q7
    prompts = {re.search(r"Question (q\d):", c).group(1): c for c in lm.contexts}
    assert prompts["q0"] == official_prompt(record(*QUESTIONS[0][:5]))
    assert prompts["q7"].startswith("Please read the following text and answer the question below.")
    assert prompts["q7"].endswith(
        'Format your response as follows: "The correct answer is (insert answer here)".'
    )
    from dprope.data.tokenizer import byte_tokenizer

    assert (
        len(byte_tokenizer()(prompts["q7"])["input_ids"])
        <= 1024 - 128
        < len(byte_tokenizer()(official_prompt(record(*QUESTIONS[7][:5])))["input_ids"])
    )
    assert "| accuracy | 50.0 | 100.0 | 20.0 | 33.3 | 50.0 | 66.7 |" in result.markdown
    assert [p.name for p in BENCHMARK.plot(result, "tiny", tmp_path)] == ["longbench_v2.png"]


def test_compensated_counts_unanswered_as_a_quarter(tiny_eval_model, data_file):
    cfg = LongBenchV2Config(data_file=str(data_file), compensated=True, bootstrap_iters=0)
    result, _ = run(tiny_eval_model, cfg)
    assert result.summary["overall"] == pytest.approx(100 * (4 + 4 * 0.25) / 8)
    assert result.summary["hard"] == pytest.approx(100 * (1 + 4 * 0.25) / 5)
    # the official result.py with compensated = True on the same predictions: 62.5 100.0 40.0 50.0 62.5 75.0
    official = {"overall": 62.5, "easy": 100.0, "hard": 40.0, "short": 50.0, "medium": 62.5, "long": 75.0}
    assert {k: round(v, 1) for k, v in result.summary.items()} == official


def test_lm_eval_protocol_is_lm_evals_longbench2_task(tiny_eval_model, data_file):
    """lm-eval's own longbench2 config (its prompt ending in "Answer:", the letters scored by
    log-likelihood): picks right for q0, q2, q3, q5, q7."""
    cfg = LongBenchV2Config(data_file=str(data_file), protocol="lm_eval", bootstrap_iters=0)
    result, lm = run(tiny_eval_model, cfg)
    expected = {
        "overall": 62.5,
        "easy": 200 / 3,
        "hard": 60.0,
        "short": 200 / 3,
        "medium": 0.0,
        "long": 100.0,
    }
    assert result.summary == pytest.approx(expected)
    assert result.details["unanswered"] == 0  # a log-likelihood pick always answers
    assert all(
        c.startswith("Please read the following text") and c.endswith("\n\nAnswer:") for c in lm.contexts
    )
    assert "(A) the Alder \n(B) the Brill" in lm.contexts[0]  # lm-eval's template: choices not stripped
    assert (
        result.files["longbench_v2/result.txt"].splitlines()[1]
        == "predictions\t62.5\t66.7\t60.0\t66.7\t0.0\t100.0"
    )


# Responses through the official pred.py extract_answer (THUDM/LongBench 2e00731, run on these strings)
OFFICIAL_EXTRACTION = [
    ("The correct answer is (A)", "A"),
    ("**The correct answer is (B)**", "B"),
    ("The correct answer is: D", None),
    ("The correct answer is B, since", "B"),
    ("the correct answer is (a)", None),
    ("The correct answer is (E). The correct answer is (C)", "C"),
    ("The correct answer is E or B", None),
    ("Answer: (C)", None),
    ("", None),
]


@pytest.mark.parametrize(("response", "letter"), OFFICIAL_EXTRACTION)
def test_answer_extraction_equals_the_officials(response, letter):
    assert extract_answer(response) == letter


def test_prediction_file_rescores_as_the_official_result_py(tiny_eval_model, data_file):
    """The official result.py on the written predictions.jsonl (run on this file): its line."""
    result, _ = run(tiny_eval_model, LongBenchV2Config(data_file=str(data_file), bootstrap_iters=0))
    assert result.files["longbench_v2/result.txt"].splitlines() == [
        "Model\tOverall\tEasy\tHard\tShort\tMedium\tLong",
        "predictions\t50.0\t100.0\t20.0\t33.3\t50.0\t66.7",
    ]
    lines = [json.loads(x) for x in result.files["longbench_v2/predictions.jsonl"].splitlines()]
    assert [x["judge"] for x in lines] == [True, True, True, False, False, True, False, False]
    assert list(lines[0])[:12] == list(record(*QUESTIONS[0][:5]))
    assert lines[7]["context"] == record(*QUESTIONS[7][:5])["context"][:1000]


def test_bad_data_files_name_the_key(data_file, tmp_path, byte_tokenizer):
    ctx = EvalContext(max_positions=1024)
    with pytest.raises(
        ConfigError,
        match=r"^eval.longbench_v2.data_file: not set: no LongBench v2 data \(expected the official data.json",
    ):
        prepare_longbench_v2(LongBenchV2Config(), byte_tokenizer, ctx)
    with pytest.raises(
        ConfigError, match=r"^data_file: no file at .*missing.json \(expected the official data.json"
    ):
        LongBenchV2Config(data_file=str(tmp_path / "missing.json"))
    bad = [record(*q[:5]) for q in QUESTIONS]
    bad[2]["difficulty"] = "medium"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"bad.json\[2\]: field 'difficulty' must be one of easy, hard"):
        prepare_longbench_v2(LongBenchV2Config(data_file=str(tmp_path / "bad.json")), byte_tokenizer, ctx)
    del bad[2]["answer"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"bad.json\[2\]: field 'answer' must be a string"):
        prepare_longbench_v2(LongBenchV2Config(data_file=str(tmp_path / "bad.json")), byte_tokenizer, ctx)
    (tmp_path / "lines.jsonl").write_text('{"_id": 1}\nnot json\n')
    with pytest.raises(ConfigError, match=r"lines.jsonl:2: not valid JSON"):
        prepare_longbench_v2(LongBenchV2Config(data_file=str(tmp_path / "lines.jsonl")), byte_tokenizer, ctx)
    with pytest.raises(ConfigError, match=r"^tasks: LongBench v2 runs as one zero-shot task"):
        from dprope.eval.harness import LmEvalTask

        LongBenchV2Config(tasks=[LmEvalTask("longbench2")])


@pytest.mark.parametrize("protocol", ["official", "lm_eval"])
def test_default_backend_runs_both_protocols(tiny_eval_model, data_file, protocol):
    """The real lm-eval model (HFLM around the loaded tiny model): the task runs, every question
    is judged, and lm-eval's own mean equals the reported overall."""
    from dprope.eval.suite import EvalConfig, run_suite

    cfg = LongBenchV2Config(
        data_file=str(data_file), protocol=protocol, limit=3, max_new_tokens=4, bootstrap_iters=0
    )
    settings = EvalConfig(tasks=["longbench_v2"], progress=False, batch_size=2, longbench_v2=cfg)
    result = run_suite(tiny_eval_model, settings).benchmarks["longbench_v2"]
    assert [r["_id"] for r in result.samples] == ["q0", "q1", "q2"]
    assert result.details["lm_eval_acc"] == pytest.approx(result.summary["overall"])
    if protocol == "official":
        assert all(isinstance(r["response"], str) for r in result.samples)
    else:
        assert all(r["pred"] in "ABCD" for r in result.samples)
