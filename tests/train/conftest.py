"""Helpers for end-to-end training tests: the tiny model on the embedded corpus, on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "launch" / "train.py"


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One processed-data cache for the whole session."""
    return tmp_path_factory.mktemp("data-cache")


def small_run(output_dir: Path, data_cache: Path, *extra: str) -> list[str]:
    """Overrides for a small but real run: tiny model, DPRoPE s=4, 256-token sequences."""
    return [
        f"trainer.output_dir={output_dir}",
        f"data.cache_dir={data_cache}",
        "data.max_length=256",
        "trainer.global_batch_size=4",
        "trainer.micro_batch_size=2",
        "trainer.log_every=1",
        *extra,
    ]


DIST_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def train_env(**extra: str) -> dict[str, str]:
    """The test process's environment without its own process-group variables, for a training
    run on the CPU: the GPU hidden and DeepSpeed's accelerator named (`cpu_only_environment`)."""
    from dprope.accelerator import cpu_only_environment

    env = cpu_only_environment({k: v for k, v in os.environ.items() if k not in DIST_VARIABLES})
    env.update(WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def launch(
    overrides: list[str], *, launcher: list[str] | None = None, env: dict | None = None
) -> subprocess.Popen:
    command = [*(launcher or [sys.executable]), str(TRAIN), *overrides]
    return subprocess.Popen(
        command, cwd=ROOT, env=env or train_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run_train(overrides: list[str], *, launcher: list[str] | None = None, timeout: int = 600):
    process = launch(overrides, launcher=launcher)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def assert_one_line_error(result: subprocess.CompletedProcess, field: str) -> None:
    """The run exited 2 with a single stderr line ``error: <field>: ...``."""
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), result.stderr[-2000:]


def read_metrics(output_dir: Path) -> list[dict]:
    path = output_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def dropout_model_dir(tmp_path_factory) -> Path:
    """A saved tiny model directory (as `model.pretrained` takes) whose attention dropout makes
    training consume the torch RNG: a resume that does not restore the RNG state changes its
    losses. Seeded differently from `model=tiny`'s random init, so loading it is observable."""
    import torch
    from transformers import LlamaForCausalLM

    from dprope.model import ModelConfig

    path = tmp_path_factory.mktemp("tiny-dropout")
    config = ModelConfig(name="tiny", tokenizer="byte").hf_config()
    config.attention_dropout = 0.1
    torch.manual_seed(7)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def pretrained(model_dir: Path) -> list[str]:
    """Overrides training from a saved model directory with the built-in byte tokenizer."""
    return [f"model.pretrained={model_dir}", "model.tokenizer=byte"]


def tiny_plan(model_cfg, trainer, rope=None, seq_len: int = 256, **fields):
    """The training plan of ``model_cfg`` on one process (DPRoPE s=4 unless ``rope``); ``fields``
    replace planned values a CPU cannot choose itself (``precision="bf16"``, a registered
    attention ``implementation``)."""
    import dataclasses

    from dprope.rope.registry import default_config
    from dprope.train.plan import plan_training

    plan = plan_training(model_cfg, rope or default_config("dprope", 4.0), trainer, seq_len, world_size=1)
    return dataclasses.replace(plan, **fields)


def materialised(plan):
    """``plan`` built on this process (a process group of one)."""
    from dprope.train.engine import init_distributed, materialise

    return materialise(plan, init_distributed())
