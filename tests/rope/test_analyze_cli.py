"""`launch/analyze.py` end to end: the table, analysis.json, figures, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def analyze(*overrides, cwd=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "launch" / "analyze.py"), *overrides],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=300,
    )


def test_llama2_analysis_writes_json_and_figures(tmp_path):
    out = tmp_path / "analysis"
    run = analyze("model=llama2_7b", "rope=dprope", "rope.factor=4", f"analysis.output_dir={out}")
    assert run.returncode == 0, run.stderr
    assert "Rotary-angle disturbance: llama2-7b" in run.stdout
    assert "Per-pair view of 'dprope'" in run.stdout
    doc = json.loads((out / "analysis.json").read_text())
    assert set(doc["strategies"]) == {"none", "pi", "ntk", "yarn", "llama3", "dprope"}
    for entry in doc["strategies"].values():
        assert len(entry["per_pair"]) == len(entry["scaling_factors"]) == 64
    assert doc["strategies"]["dprope"]["disturbance"] < doc["strategies"]["pi"]["disturbance"]
    assert doc["target_length"] == 16384
    assert (out / "per_pair_disturbance.png").stat().st_size > 0
    assert (out / "angle_distributions.png").stat().st_size > 0
    assert f"analysis: {out / 'analysis.json'}" in run.stdout


def test_default_output_goes_to_the_run_directory(tmp_path):
    run = analyze("model=tiny", "rope=pi", "analysis.figures=false", f"hydra.run.dir={tmp_path / 'run'}")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "analysis.json").exists()


@pytest.mark.parametrize(
    "overrides,field",
    [
        (["rope.factor=0.5"], "rope.factor"),
        (["rope.num_intervals=0"], "rope.num_intervals"),
        (["rope.num_interpolated_dims=7"], "rope.num_interpolated_dims"),
        (["rope.num_interpolated_dims=-2"], "rope.num_interpolated_dims"),
        (["model.head_dim=127"], "model.head_dim"),
        (["model.original_max_position_embeddings=0"], "model.original_max_position_embeddings"),
        (["rope=clex"], "rope"),
        (["rope.name=clex"], "rope.name"),
        (["model=gpt5"], "model"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(overrides, field, check_entry):
    """The entry point's own check, in process (the subprocess below shows it ends the process)."""
    base = {"model": "model=llama2_7b", "rope": "rope=dprope"}
    for override in overrides:
        base.pop(override.split("=")[0], None)  # a group chosen by the case replaces the default
    code, lines = check_entry("launch/analyze.py", *base.values(), *overrides)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {field}:"), lines[0]


def test_bad_input_found_by_the_analysis_ends_the_process_in_one_line(tmp_path):
    """k beyond head_dim passes the command-line check (k is checked against the model when the
    strategy is built); the job still ends in one line, exit 2, before writing anything."""
    out = tmp_path / "analysis"
    run = analyze(
        "model=llama2_7b",
        "rope.num_interpolated_dims=130",
        f"analysis.output_dir={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: rope.num_interpolated_dims:"), run.stderr
    assert not out.exists()
