"""A first training run says what it is doing while it sets up, and prints nothing of DeepSpeed's
op probing and building: the shared-memory op it built serves only tensor-parallel inference."""

from __future__ import annotations

import re

import pytest

from tests.train.conftest import run_train, small_run

NOTES = [
    r"set-up \d+\.\d s: loading torch, transformers and DeepSpeed",
    r"set-up \d+\.\d s: starting the process group \(world size 1\)",
    r"data: tokenizing split 'train' into .* \(once for these settings; later runs reuse it\)",
    r"set-up \d+\.\d s: building the model \(random init\) and the DeepSpeed engine \(ZeRO-3\)",
    r"model transforms: ",
    r"dprope: dprope s=4 ",
]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("first-run")
    # a cache of its own, so this run tokenizes as a first run does
    overrides = small_run(root / "run", root / "cache", "trainer.steps=2", "trainer.export=false")
    result = run_train(overrides, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_set_up_phases_are_announced_in_order(first_run):
    lines = (first_run.stdout + first_run.stderr).splitlines()
    positions = []
    for pattern in NOTES:
        found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert found, f"no line matches {pattern!r}:\n" + "\n".join(lines[:40])
        positions.append(found[0])
    assert positions == sorted(positions)
    assert re.search(NOTES[0], lines[0])  # the first thing the run prints


@pytest.mark.slow
def test_no_deepspeed_op_build_output(first_run):
    console = first_run.stdout + first_run.stderr
    for noise in ("test.c", "gcc ", "built successfully", "deepspeed_shm_comm"):
        assert noise not in console


def test_the_op_builder_is_replaced_only_during_the_call():
    import importlib

    from dprope.train.engine import without_inference_comm_op

    ds_torch = importlib.import_module("deepspeed.comm.torch")

    original = ds_torch.build_shm_op
    with pytest.raises(RuntimeError), without_inference_comm_op():
        assert ds_torch.build_shm_op() is None
        raise RuntimeError("a failed start")
    assert ds_torch.build_shm_op is original
