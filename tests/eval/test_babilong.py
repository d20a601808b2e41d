"""BABILong through lm-eval's own babilong tasks on local parquet files in the hub's layout: an
end-to-end run on the tiny model with an lm-eval model whose answers are controlled (known grid
by task and length), the real lm-eval model, and missing or bad data."""

from __future__ import annotations

import re

import pytest

from dprope.config import ConfigError
from dprope.eval.benchmarks.babilong import BENCHMARK
from dprope.eval.benchmarks.babilong.config import BabilongConfig, default_lengths
from dprope.eval.benchmarks.babilong.data import prepare_babilong
from dprope.eval.common import EvalContext
from dprope.eval.harness import LmEvalTask
from tests.eval.long_fixtures import PLACES, write_babilong


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_babilong(tmp_path_factory.mktemp("babilong"))


def controlled_lm():
    """Answers every 0k question right; at 1k only the first qa1 question (the others name another
    place). Records the prompts."""
    from lm_eval.api.model import LM

    class ControlledLM(LM):
        def __init__(self):
            super().__init__()
            self.contexts = []

        def generate_until(self, requests):
            out = []
            for request in requests:
                context = request.args[0]
                self.contexts.append(context)
                name = re.findall(r"Where is (Mary(qa\d)(\dk)(\d))\?", context)[-1]
                person, qa, length, i = name
                right = length == "0k" or (qa == "qa1" and i == "0")
                place = PLACES[int(i)] if right else "bathroom"
                out.append(f" The most recent location of {person} is {place}.")
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    return ControlledLM()


def test_end_to_end_scores_the_known_grid(tiny_eval_model, data_dir, tmp_path):
    from dprope.eval.backends import Backends
    from dprope.eval.suite import EvalConfig, run_suite

    lm = controlled_lm()
    cfg = BabilongConfig(
        tasks=[LmEvalTask("babilong_qa1", 2), LmEvalTask("babilong_qa2", 2)],
        data_dir=str(data_dir),
        bootstrap_iters=0,
    )
    settings = EvalConfig(tasks=["babilong"], progress=False, babilong=cfg)  # lengths follow the 1024 context
    result = run_suite(tiny_eval_model, settings, backends=Backends(lm_eval_model=lambda *a: lm)).benchmarks[
        "babilong"
    ]
    assert result.details["lengths"] == ["0k", "1k"]
    assert result.details["scores"]["qa1"] == pytest.approx({"0k": 100.0, "1k": 100 / 3})
    assert result.details["scores"]["qa2"] == pytest.approx({"0k": 100.0, "1k": 0.0})
    assert result.summary == pytest.approx({"0k": 100.0, "1k": 50 / 3, "avg": 175 / 3})
    assert len(result.samples) == 12 and sum(r["score"] for r in result.samples) == 7
    # lm-eval's own task: its qa1 instruction and its two in-context examples before each question
    qa1 = [c for c in lm.contexts if "Maryqa1" in c]
    assert all("I will give you context with the facts about positions" in c for c in qa1)
    assert all("Charlie went to the hallway" in c and "Alan moved to the garage" in c for c in qa1)
    assert "| **mean over 2 tasks** | 100.00 | 16.67 | 58.33 |" in result.markdown
    figures = BENCHMARK.plot(result, "tiny", tmp_path)
    assert [p.name for p in figures] == ["babilong.png", "babilong_tasks.png"]


def test_default_backend_runs(tiny_eval_model, data_dir):
    """The real lm-eval model around the loaded tiny model: every question answered and judged."""
    from dprope.eval.suite import EvalConfig, run_suite

    cfg = BabilongConfig(
        tasks=[LmEvalTask("babilong_qa1", 2)],
        data_dir=str(data_dir),
        lengths=["0k"],
        limit=2,
        bootstrap_iters=0,
    )
    result = run_suite(tiny_eval_model, EvalConfig(tasks=["babilong"], progress=False, babilong=cfg))
    samples = result.benchmarks["babilong"].samples
    assert [s["target"] for s in samples] == ["kitchen", "garden"] and all(
        isinstance(s["prediction"], str) for s in samples
    )


def test_default_lengths_follow_the_context():
    assert default_lengths(1024) == ["0k", "1k"]
    assert default_lengths(16384) == ["0k", "1k", "2k", "4k", "8k", "16k"]
    assert default_lengths(131072)[-1] == "128k"


def test_missing_and_bad_data_name_the_key(data_dir, tmp_path):
    ctx = EvalContext(max_positions=1024)
    with pytest.raises(
        ConfigError,
        match=r"^eval.babilong.data_dir: not set: no BABILong data \(expected <data_dir>/<length>/<qa>-00000-of-00001.parquet",
    ):
        prepare_babilong(BabilongConfig(), ctx)
    with pytest.raises(
        ConfigError,
        match=r"^eval.babilong.data_dir: no qa3 data at 0k: expected .*/0k/qa3-00000-of-00001.parquet",
    ):
        prepare_babilong(BabilongConfig(data_dir=str(data_dir), tasks=[LmEvalTask("babilong_qa3", 2)]), ctx)
    with pytest.raises(ConfigError, match=r"no qa7 data at 1k \(BABILong has qa6-qa20 at 0k only\)"):
        prepare_babilong(
            BabilongConfig(data_dir=str(data_dir), tasks=[LmEvalTask("babilong_qa7", 2)], lengths=["1k"]), ctx
        )
    with pytest.raises(ConfigError, match=r"^data_dir: no directory at"):
        BabilongConfig(data_dir=str(tmp_path / "missing"))
    with pytest.raises(
        ConfigError, match=r"^eval.babilong.lengths: 4096 exceeds the checkpoint's max_position_embeddings"
    ):
        prepare_babilong(BabilongConfig(data_dir=str(data_dir), lengths=["4k"]), ctx)
    bad = tmp_path / "bad"
    (bad / "0k").mkdir(parents=True)
    (bad / "0k" / "qa1-00000-of-00001.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match=r"qa1-00000-of-00001.parquet: not a readable parquet file"):
        prepare_babilong(
            BabilongConfig(data_dir=str(bad), tasks=[LmEvalTask("babilong_qa1", 2)], lengths=["0k"]), ctx
        )
    with pytest.raises(
        ConfigError, match=r"^tasks\[0\].name: 'babilong_qa21' is not an lm-eval BABILong task"
    ):
        BabilongConfig(tasks=[LmEvalTask("babilong_qa21")])
    with pytest.raises(ConfigError, match=r"^lengths: must be null or BABILong split names"):
        BabilongConfig(lengths=["4096"])
