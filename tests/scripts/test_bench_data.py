"""The data benchmark's quick run: a throughput row per core count, a stream row per core count
and corpus size with data.steady_memory on, and the same on all cores with it off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.train.conftest import ROOT


@pytest.mark.slow
def test_quick_run_prints_every_row():
    out = subprocess.run(
        [sys.executable, "scripts/bench_data.py", "--quick"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split(" | ") for line in out.stdout.splitlines() if line.startswith("| byte |")]
    cores = sorted({1, min(2, len(os.sched_getaffinity(0))), len(os.sched_getaffinity(0))})
    throughput = [r for r in rows if len(r) == 8]
    stream = [r for r in rows if len(r) == 9]
    assert [int(r[1]) for r in throughput] == cores
    assert [(int(r[1]), r[2], r[3].split()[0]) for r in stream] == [
        (c, steady, size)
        for c, steady in [*((c, "on") for c in cores), (cores[-1], "off")]
        for size in ("x1", "x4")
    ]
    assert all(r[-1].strip(" |") == "1.00" for r in stream if r[3].startswith("x1 "))
