"""Shared fixtures: tiny models and tokenizers built in code, never downloaded."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (`make test`), the workers share the cores: each worker's torch, and each
# process a test starts, gets its share of OpenMP threads instead of one per core (more threads
# than cores spin and slow every worker down).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


DIST_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def selects_gpu_tests(markexpr: str) -> bool:
    """Whether a ``-m`` expression can select a test marked `gpu` (alone or also `slow`)."""
    if not markexpr:
        return True
    from _pytest.mark.expression import Expression

    expression = Expression.compile(markexpr)
    return any(
        expression.evaluate(lambda name, marks=marks, **kwargs: name in marks)
        for marks in ({"gpu"}, {"gpu", "slow"})
    )


def pytest_configure(config):
    """Where this process computes, decided before anything touches CUDA: a run whose ``-m``
    leaves the `gpu` tests out (`make test`, `make test-slow`) is a CPU run and gets the GPU
    hidden; otherwise (`make test-gpu`) the GPU stays visible. DeepSpeed's accelerator is named
    ``cpu`` only where no GPU is visible (`dprope.accelerator`)."""
    if not selects_gpu_tests(config.option.markexpr):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from dprope.accelerator import name_deepspeed_accelerator

    name_deepspeed_accelerator()


def pytest_report_header(config):
    from dprope.accelerator import device_type

    return f"dprope: computing on {device_type()} (DS_ACCELERATOR={os.environ.get('DS_ACCELERATOR')})"


@pytest.fixture(autouse=True)
def no_process_group_variables_left_behind():
    """A training run in the test process sets RANK, MASTER_PORT, ... for its process group of
    one; a later test's subprocess that copies this environment must not join that group's port."""
    before = {name: os.environ.get(name) for name in DIST_VARIABLES}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True, scope="session")
def worker_threads():
    """This worker's share of the cores for torch's intra-op threads (see OMP_NUM_THREADS above)."""
    if _WORKERS > 1:
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True, scope="session")
def config_schemas():
    """Hydra's ConfigStore holds the config dataclasses, which every preset starts from."""
    from dprope.cli import register_schemas

    register_schemas()


@functools.cache
def entry_point(path: str):
    """An entry point (``launch/<name>.py``, ``scripts/slurm/submit.py``) imported from its file."""
    spec = importlib.util.spec_from_file_location(f"entry_{Path(path).stem}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def check_entry(capsys):
    """Run an entry point's command-line check in this process, as ``python <path> <argv>`` runs it
    before any work: returns (exit code, stderr lines), 0 when the command line checks."""
    from dprope.cli import check_command_line

    def check(path: str, *argv: str) -> tuple[int, list[str]]:
        module = entry_point(path)
        capsys.readouterr()
        try:
            if path.endswith("submit.py"):  # its check is composing the jobs (then SLURM's)
                module.compose_jobs(module.parse_args(list(argv)))
            else:
                check_command_line(module.main.config_name, list(argv), module.main.build)
        except SystemExit as exit_info:
            return exit_info.code, capsys.readouterr().err.strip().splitlines()
        return 0, capsys.readouterr().err.strip().splitlines()

    return check


@pytest.fixture
def tiny_model_cfg():
    """The `model=tiny` preset as a typed config."""
    from dprope.model import ModelConfig

    return ModelConfig(name="tiny", tokenizer="byte")


@pytest.fixture(scope="session")
def byte_tokenizer():
    from dprope.data.tokenizer import byte_tokenizer

    return byte_tokenizer()


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests where this process does not compute on CUDA."""
    from dprope.accelerator import on_cuda

    if on_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not a keyword (a folder named gpu)
            item.add_marker(skip)
