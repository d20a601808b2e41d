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
os.environ.setdefault("DS_ACCELERATOR", "cpu")


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
    """Skip `gpu` tests where no CUDA device is present."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
