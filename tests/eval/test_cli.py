"""`launch/eval.py` as a user runs it: outputs of a run, and one-line errors (exit 2) on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_cli(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """`python launch/eval.py <args>` from the repository root, offline, without wandb, with its
    Hydra run directory (logs, .hydra/) in ``run_dir`` rather than under outputs/."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, str(ROOT / "launch" / "eval.py"), f"hydra.run.dir={run_dir}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_passkey_and_perplexity_run_end_to_end(tiny_model_dir, text_documents, tmp_path):
    out = tmp_path / "run"  # the Hydra run directory: the default place of the results
    proc = run_cli(
        out,
        "eval=all",  # every section present; run two of them
        "eval.tasks=[passkey,perplexity]",
        "model=tiny",
        f"model.pretrained={tiny_model_dir}",
        "model.tokenizer=null",  # the tokenizer saved with the model
        "eval.passkey.lengths=[300,400]",
        "eval.passkey.depths=[0,1]",
        "eval.passkey.trials=2",
        "eval.perplexity.lengths=[128,256]",
        "eval.perplexity.stride=64",
        "data=local",
        f"data.paths.test=[{text_documents[0]},{text_documents[1]}]",
        f"data.cache_dir={tmp_path / 'cache'}",
        "eval.batch_size=4",
        "eval.progress=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| accuracy |" in proc.stdout and "perplexity" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert list(results["benchmarks"]) == ["passkey", "perplexity"]
    assert set(results["benchmarks"]["passkey"]["summary"]) == {"300", "400", "avg"}
    assert results["benchmarks"]["perplexity"]["summary"]["256"] > 1.0
    assert results["model"]["max_position_embeddings"] == 1024 and results["model"]["dtype"] == "float32"
    assert results["eval"]["passkey"]["trials"] == 2
    for name in (
        "results.md",
        "passkey.png",
        "passkey_heatmap.png",
        "perplexity.png",
        "predictions/passkey.jsonl",
    ):
        assert (out / name).is_file(), name
    assert "## Passkey retrieval" in (out / "results.md").read_text()
    assert (out / ".hydra" / "config.yaml").is_file()


@pytest.fixture(scope="module")
def malformed_longbench(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad-longbench")
    (path / "trec_e.jsonl").write_text('{"input": "q", "context": "c", "length": 10}\n')
    return path


@pytest.fixture(scope="module")
def weightless_dir(tmp_path_factory, tiny_model_dir):
    path = tmp_path_factory.mktemp("no-weights")
    (path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.pretrained=./no/such/model"], "model.pretrained: no model directory at ./no/such/model"),
        (["model.pretrained={weightless}"], "model.pretrained: no weights"),
        (["model.pretrained={model}", "eval=nope"], "eval: unknown option 'nope'"),
        (
            ["model.pretrained={model}", "eval.tasks=[passkey,nope]"],
            "eval.tasks[1]: unknown benchmark 'nope'",
        ),
        (
            ["model.pretrained={model}", "eval.passkey.lengths=[512,4096]"],
            "eval.passkey.lengths: 4096 exceeds the checkpoint's max_position_embeddings (1024)",
        ),
        (
            [
                "model.pretrained={model}",
                "eval=longbench_e",
                "eval.longbench_e.datasets=[trec_e]",
                "eval.longbench_e.data_dir={bad}",
            ],
            "eval.longbench_e.data_dir: {bad}/trec_e.jsonl:1: missing field 'answers'",
        ),
        (["model.pretrained={model}", "+eval.passkey.trails=3"], "eval.passkey.trails: unknown key"),
        (
            [
                "model.pretrained={model}",
                "eval=longbench_v2",
                "eval.longbench_v2.data_file=/no/such/data.json",
            ],
            "eval.longbench_v2.data_file: no file at /no/such/data.json (expected the official data.json",
        ),
        (
            ["model.pretrained={model}", "eval=babilong", "eval.babilong.data_dir={bad}"],
            "eval.babilong.data_dir: no qa1 data at 0k: expected {bad}/0k/qa1-00000-of-00001.parquet",
        ),
    ],
    ids=[
        "missing-model",
        "no-weights",
        "unknown-preset",
        "unknown-task",
        "beyond-max-position",
        "malformed-data",
        "typo",
        "longbench-v2-missing",
        "babilong-missing",
    ],
)
def test_bad_input_is_one_line_naming_the_field(
    tiny_model_dir, weightless_dir, malformed_longbench, tmp_path, overrides, message
):
    paths = {"model": tiny_model_dir, "weightless": weightless_dir, "bad": malformed_longbench}
    args = ["model=tiny", f"eval.output_dir={tmp_path}", *(o.format(**paths) for o in overrides)]
    proc = run_cli(tmp_path / "hydra", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {message.format(**paths)}"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "Loading weights" not in proc.stderr  # refused before the model loads
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_longbench_v2_and_babilong_run_end_to_end(tiny_model_dir, tmp_path):
    """eval=all with the two lm-eval benchmarks over local files in the official formats, through
    lm-eval's model around the tiny checkpoint: results, predictions and the official files."""
    from tests.eval.long_fixtures import write_babilong, write_longbench_v2

    data_file = write_longbench_v2(tmp_path / "data.json")
    babilong = write_babilong(tmp_path / "babilong")
    out = tmp_path / "run"
    proc = run_cli(
        out,
        "eval=all",
        "eval.tasks=[longbench_v2,babilong]",
        "model=tiny",
        f"model.pretrained={tiny_model_dir}",
        "model.tokenizer=null",
        f"eval.longbench_v2.data_file={data_file}",
        "eval.longbench_v2.limit=2",
        "eval.longbench_v2.max_new_tokens=4",
        "eval.longbench_v2.bootstrap_iters=0",
        f"eval.babilong.data_dir={babilong}",
        "eval.babilong.tasks=[{name: babilong_qa1, num_fewshot: 2}]",
        "eval.babilong.limit=1",
        "eval.babilong.bootstrap_iters=0",
        "eval.progress=false",
        "eval.plots=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["benchmarks"]["longbench_v2"]["summary"]) == {
        "overall",
        "easy",
        "hard",
        "short",
        "medium",
        "long",
    }
    assert set(results["benchmarks"]["babilong"]["summary"]) == {"0k", "1k", "avg"}
    assert (out / "longbench_v2" / "result.txt").read_text().startswith("Model\tOverall\tEasy\tHard")
    assert len((out / "predictions" / "babilong.jsonl").read_text().splitlines()) == 2
