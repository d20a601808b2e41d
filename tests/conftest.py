"""Shared fixtures: tiny models and tokenizers built in code, never downloaded."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(autouse=True, scope="session")
def config_schemas():
    """Hydra's ConfigStore holds the config dataclasses, which every preset starts from."""
    from dprope.cli import register_schemas

    register_schemas()


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
