"""The sweep presets run on this machine with the local launcher, and their results are collected:
a tiny training sweep over k and a disturbance-only analysis sweep over B."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.slurm.conftest import COLLECT, ROOT
from tests.train.conftest import train_env


def run(*command: str, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def collect(sweep: Path) -> list[list[str]]:
    run(sys.executable, str(COLLECT), str(sweep))
    assert (sweep / "sweep.png").stat().st_size > 0
    return [line.strip("| ").split(" | ") for line in (sweep / "sweep.md").read_text().splitlines()]


def test_training_sweep_over_k_runs_locally_and_is_collected(tmp_path):
    sweep = tmp_path / "sweep"
    run(
        sys.executable,
        str(ROOT / "launch" / "train.py"),
        "-m",
        "hydra/launcher=local",
        "+experiment=tiny_cpu_ours",
        "+sweep=interpolated_dims",
        "rope.num_interpolated_dims=8,12",  # k within the tiny head_dim of 16
        f"hydra.sweep.dir={sweep}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.max_length=256",
        "trainer.steps=2",
        "trainer.global_batch_size=4",
        "trainer.micro_batch_size=2",
    )
    header, _, *rows = collect(sweep)
    assert header == ["run", "rope.num_interpolated_dims", "steps", "final loss", "disturbance", "done"]
    assert [row[:3] for row in rows] == [["0_k8", "8", "2/2"], ["1_k12", "12", "2/2"]]
    assert all(row[-1] == "True" and float(row[3]) > 0 and float(row[4]) > 0 for row in rows)


def test_analysis_sweep_over_b_is_collected(tmp_path):
    sweep = tmp_path / "sweep"
    run(
        sys.executable,
        str(ROOT / "launch" / "analyze.py"),
        "-m",
        "model=llama2_7b",
        "rope.factor=2",
        "+sweep=num_intervals",
        "analysis.figures=false",
        f"hydra.sweep.dir={sweep}",
    )
    header, _, *rows = collect(sweep)
    assert header[:2] == ["run", "rope.num_intervals"]
    assert [row[1] for row in rows] == ["90", "180", "360", "720"]
    assert all(float(row[header.index("disturbance")]) > 0 for row in rows)
