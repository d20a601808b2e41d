"""One place decides where a process computes (`dprope.accelerator`): DeepSpeed's accelerator,
the device, the process-group backend and the precision never disagree, CPU children get the GPU
hidden, and FlashAttention-2 is chosen only where transformers and the import both say it runs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from dprope import accelerator
from dprope.config import ConfigError
from dprope.train.attention import ATTENTION_MODES, resolve_implementation
from dprope.train.config import TrainerConfig
from dprope.train.engine import deepspeed_config
from dprope.train.plan import resolve_precision
from tests.conftest import selects_gpu_tests
from tests.train.conftest import ROOT, train_env


@pytest.fixture
def gpu_visible(monkeypatch):
    """torch reports one CUDA device (the decisions only, nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    accelerator.flash_attn_problem.cache_clear()
    yield
    accelerator.flash_attn_problem.cache_clear()


def test_a_visible_gpu_makes_a_cuda_nccl_bf16_process(gpu_visible, monkeypatch):
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    assert accelerator.device_type() == "cuda" and accelerator.backend() == "nccl"
    assert accelerator.device(1) == torch.device("cuda", 1)
    assert resolve_precision(TrainerConfig()) == "bf16"
    assert deepspeed_config(TrainerConfig(), 1, "bf16")["optimizer"]["params"]["fused"] is True


def test_ds_accelerator_cpu_makes_the_whole_process_cpu_even_with_a_gpu(gpu_visible, monkeypatch):
    """DeepSpeed's accelerator is the CPU under DS_ACCELERATOR=cpu: the model stays on the CPU, so
    the backend must be gloo, the precision fp32 and the optimizer one that runs on the CPU."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert accelerator.device_type() == "cpu" and accelerator.backend() == "gloo"
    assert accelerator.device(1) == torch.device("cpu")
    assert resolve_precision(TrainerConfig()) == "fp32"
    with pytest.raises(ConfigError, match="trainer.precision"):
        resolve_precision(TrainerConfig(precision="bf16"))
    assert "fused" not in deepspeed_config(TrainerConfig(), 1, "fp32")["optimizer"]["params"]
    assert resolve_implementation("auto", ATTENTION_MODES["document"]) == "sdpa"


@pytest.mark.parametrize("value,message", [("xpu", "must be one of cuda, cpu"), ("cuda", "sees no CUDA")])
def test_an_accelerator_dprope_cannot_use_is_refused_naming_the_variable(value, message, monkeypatch):
    monkeypatch.setattr(accelerator, "cuda_visible", lambda: False)
    monkeypatch.setenv("DS_ACCELERATOR", value)
    with pytest.raises(ConfigError, match=f"DS_ACCELERATOR: .*{message}"):
        accelerator.device_type()


def test_deepspeed_disagreeing_with_the_process_is_an_error(monkeypatch):
    """DeepSpeed fixed its accelerator (cpu here) when first used: a process that would now
    compute on CUDA must not go on with it."""
    import deepspeed  # noqa: F401 (its accelerator is chosen on import)

    accelerator.check_deepspeed_agrees()
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(accelerator, "cuda_visible", lambda: True)
    with pytest.raises(
        RuntimeError, match="DeepSpeed's accelerator is 'cpu' but this process computes on 'cuda'"
    ):
        accelerator.check_deepspeed_agrees()


def test_deepspeed_accelerator_is_named_only_where_there_is_no_cuda(monkeypatch):
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(accelerator, "cuda_visible", lambda: True)
    accelerator.name_deepspeed_accelerator()
    assert "DS_ACCELERATOR" not in os.environ
    monkeypatch.setattr(accelerator, "cuda_visible", lambda: False)
    accelerator.name_deepspeed_accelerator()
    assert os.environ["DS_ACCELERATOR"] == "cpu"


def test_training_children_meant_for_the_cpu_get_the_gpu_hidden():
    env = train_env()
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["DS_ACCELERATOR"] == "cpu"
    probe = "import torch; print(torch.cuda.device_count())"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "0"


@pytest.mark.parametrize(
    "markexpr,gpu_run",
    [("", True), ("gpu", True), ("not slow and not gpu", False), ("slow and not gpu", False), ("slow", True)],
)
def test_a_run_without_gpu_tests_hides_the_gpu(markexpr, gpu_run):
    assert selects_gpu_tests(markexpr) is gpu_run


def fake_flash_attn(root, distribution: str, version: str, init: str) -> None:
    """An installed package named flash_attn: its distribution's metadata and its __init__."""
    (root / "flash_attn").mkdir()
    (root / "flash_attn" / "__init__.py").write_text(init)
    info = root / f"{distribution}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    (info / "top_level.txt").write_text("flash_attn\n")
    (info / "RECORD").write_text("flash_attn/__init__.py,,\n")


@pytest.fixture
def installed(tmp_path, monkeypatch, gpu_visible):
    """Install a fake flash_attn on sys.path, with transformers' caches cleared around it."""
    from transformers.utils import import_utils

    def clear():
        for name in ("is_flash_attn_2_available", "is_torch_cuda_available", "_package_distribution_mapping"):
            getattr(getattr(import_utils, name), "cache_clear", lambda: None)()

    def install(distribution, version, init):
        fake_flash_attn(tmp_path, distribution, version, init)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "flash_attn", raising=False)
        monkeypatch.delenv("DS_ACCELERATOR", raising=False)
        clear()

    yield install
    sys.modules.pop("flash_attn", None)
    clear()


ABI_MISMATCH = 'raise ImportError("flash_attn_2_cuda.so: undefined symbol: _ZN3c105ErrorC2E")\n'


@pytest.mark.parametrize(
    "distribution,version,init,reason",
    [
        (
            "flash_attn",
            "2.8.3.post2",
            ABI_MISMATCH,
            "flash_attn does not import: flash_attn_2_cuda.so: undefined",
        ),
        ("flash_attn_4", "4.0.0b4", "", "transformers finds no flash-attn 2"),
    ],
    ids=["abi-mismatch", "flash-attn-4"],
)
def test_flash_attn_that_cannot_run_falls_back_to_sdpa_saying_why(
    installed, distribution, version, init, reason, caplog
):
    installed(distribution, version, init)
    assert accelerator.flash_attn_problem().startswith(reason)
    with caplog.at_level(logging.INFO, logger="dprope.train.attention"):
        assert resolve_implementation("auto", ATTENTION_MODES["causal"]) == "sdpa"
    assert f"attention causal: sdpa (flash-attn not used: {reason}" in caplog.text
    with pytest.raises(ConfigError, match=f"trainer.attn_implementation: .*{reason}"):
        resolve_implementation("flash_attention_2", ATTENTION_MODES["causal"])


def test_flash_attn_2_that_imports_is_chosen(installed):
    installed("flash_attn", "2.8.3.post2", '__version__ = "2.8.3.post2"\n')
    assert accelerator.flash_attn_problem() is None
    assert resolve_implementation("auto", ATTENTION_MODES["anchor"]) == "flash_attention_2"
