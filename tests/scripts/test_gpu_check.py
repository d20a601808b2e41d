"""`make gpu-check`: time-boxed sections in priority order that never take the check down, the
wheels a bare GPU machine may lack, and the whole check run on the CPU (`--dry-run`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts import gpu_check
from scripts.gpu_check import Section, run_sections
from tests.train.conftest import ROOT


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's exit may wait for a reaper)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\tZ" not in next(x for x in status.read_text().splitlines() if x.startswith("State:"))
    except FileNotFoundError:
        return False


def test_sections_are_boxed_in_order_and_skipped_without_time(tmp_path, monkeypatch):
    """A section that overruns is stopped with its children; the time an early section leaves
    goes to the next; a section without time left or without its packages is skipped."""
    monkeypatch.setattr(gpu_check, "MIN_START_S", 2.0)
    grandchild = tmp_path / "grandchild.pid"
    spawner = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(grandchild)!r}, 'w').write(str(child.pid)); time.sleep(60)"
    )
    sections = [
        Section("quick", 2, "returns at once", (), lambda out, dry: python("pass")),
        Section("failing", 2, "exits 3", (), lambda out, dry: python("raise SystemExit(3)")),
        Section("overrun", 2, "sleeps with a child", (), lambda out, dry: [*python(spawner)]),
        Section(
            "unbuilt", 1, "needs a missing package", ("no_such_package_here",), lambda out, dry: python("")
        ),
        Section("late", 0.5, "no time left for it", (), lambda out, dry: python("pass")),
    ]
    start = time.monotonic()
    outcomes = run_sections(sections, tmp_path, 7.5, False, dict(os.environ), report=lambda line: None)
    assert time.monotonic() - start < 20
    status = {o.name: o.status for o in outcomes}
    assert status["quick"] == "passed" and status["failing"] == "failed (exit 3)"
    assert status["overrun"].startswith("timed out (after ")
    assert status["unbuilt"] == "skipped (missing: no_such_package_here)"
    assert status["late"] == "skipped (time)"
    overrun = next(o for o in outcomes if o.name == "overrun")
    assert overrun.box_s > 2  # its own 2 s plus most of what "quick" and "failing" left
    pid = int(grandchild.read_text())
    time.sleep(0.5)
    assert not running(pid)  # the section's process group was stopped whole
    assert (tmp_path / "logs" / "failing.log").read_text().startswith("$ ")


def test_pins_and_the_wheel_list():
    pins = gpu_check.pinned_versions()
    assert pins["transformers"] == "5.23.0" and pins["liger-kernel"] == "0.8.5"
    assert pins["deepspeed"] == "0.19.8" and pins["hydra-core"] == "1.3.8"
    wheels = gpu_check.wheel_list()
    assert wheels["transformers"] == "5.23.0" and wheels["deepspeed"] == "0.19.8"
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime", "liger-kernel", "datasets", "pytest"} <= set(
        wheels
    )
    assert not {"torch", "triton", "sympy", "networkx"} & set(wheels)  # the machine brings torch


def test_only_what_is_missing_or_pinned_elsewhere_is_installed():
    assert gpu_check.to_install({"transformers": "5.23.0", "numpy": "0.0.1", "no-such-dist": "1.0"}) == [
        "no-such-dist==1.0"
    ]
    assert gpu_check.to_install({"transformers": "5.0.0"}) == ["transformers==5.0.0"]


@pytest.mark.slow
def test_dry_run_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--dry-run", "--output", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=2400,
    )
    summary = (out / "summary.md").read_text()
    assert done.returncode == 0, summary + done.stdout[-2000:]
    for section in gpu_check.SECTIONS:
        assert f"| {section.name} | passed |" in summary
        assert (out / "logs" / f"{section.name}.log").exists()
    assert "dry run on the CPU" in summary and "device: CPU" in summary
    assert "| 128 | (b) dprope, kernels=none |" in summary  # bench_train's table
    assert "model states (" in summary  # bench_max_length's line
    assert (out / "bench_train" / "bench_train.json").exists() and (out / "attention.json").exists()
    assert (out / "precision" / "precision.json").exists()
