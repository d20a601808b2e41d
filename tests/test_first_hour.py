"""What a newcomer meets first: every script the docs name exists, `make demo` is the documented
`python launch/train.py` and writes where the README says, and a dry run of the SLURM submission
prints its command on a machine without SLURM."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dprope.cli import compose_config

ROOT = Path(__file__).resolve().parents[1]
NAMED = re.compile(r"\b(?:launch|scripts)/[A-Za-z0-9_/.-]+\.(?:py|sbatch|sh)\b")


def documents() -> list[Path]:
    """The README, the Makefile, the scripts and entry points (their usage lines), the package."""
    files = [ROOT / "README.md", ROOT / "Makefile"]
    for folder in ("launch", "scripts", "dprope", "configs", "docs"):
        files += [
            p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sbatch", ".sh", ".md", ".yaml")
        ]
    return files


def test_every_script_the_docs_name_exists():
    named = {
        (str(path.relative_to(ROOT)), match)
        for path in documents()
        for match in NAMED.findall(path.read_text(errors="replace"))
    }
    assert len({m for _, m in named}) >= 15
    missing = sorted(f"{where} names {script}" for where, script in named if not (ROOT / script).is_file())
    assert not missing, missing


def test_make_demo_is_the_documented_default_run():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "demo", "PY=python"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert printed[-2:] == ["python", "launch/train.py"]  # no override: the same run, the same directory
    readme = (ROOT / "README.md").read_text()
    assert "python launch/train.py                                      # embedded default" in readme
    assert "(= make demo)" in readme
    output_dir = compose_config("train").trainer.output_dir
    assert output_dir == "outputs/train/demo_tiny_dprope_s4.0"
    assert f"model.pretrained={output_dir}/hf" in readme  # the evaluation after the demo
    assert "outputs/demo" not in readme


def test_a_dry_run_prints_the_command_without_slurm(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with python and nothing else: no sbatch
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir)}
    env.pop("DPROPE_GPUS_PER_NODE", None)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "slurm" / "submit.py"),
            "--dry-run",
            "--gpus-per-node=0",
            "+experiment=tiny_cpu_ours",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "note: sbatch not found: SLURM's own check (sbatch --test-only) skipped"
    ]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "checked 1 job(s) of 1 node(s) x 1 process(es) -> outputs/train/tiny_cpu_ours"
    assert lines[1] == (
        f"sbatch --gpus-per-node=0 {ROOT / 'scripts' / 'slurm' / 'train.sbatch'} +experiment=tiny_cpu_ours"
    )


def test_without_dry_run_a_missing_sbatch_is_still_an_error(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "slurm" / "submit.py"),
            "--gpus-per-node=0",
            "+experiment=tiny_cpu_ours",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: slurm: sbatch not found: submit from a machine of the cluster"
