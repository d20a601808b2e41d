"""`make install-gpu` compiles flash-attn for the GPUs present, with jobs sized by free memory."""

from __future__ import annotations

import pytest

from scripts.flash_attn_build_env import build_environment, cuda_archs, max_jobs


@pytest.mark.parametrize(
    "capabilities,archs",
    [
        ([(9, 0)], "90"),  # H100, H200
        ([(8, 0)], "80"),  # A100
        ([(8, 6), (8, 9)], "80"),  # A10, L40S run sm_80 code
        ([(9, 0), (8, 0)], "80;90"),
        ([(10, 0)], "100"),
        ([(12, 0)], "120"),
    ],
)
def test_architectures_are_those_of_the_gpus_present(capabilities, archs):
    assert cuda_archs(capabilities) == archs


@pytest.mark.parametrize("capabilities", [[(7, 5)], []])
def test_no_buildable_gpu_is_an_error(capabilities):
    with pytest.raises(ValueError):
        cuda_archs(capabilities)


@pytest.mark.parametrize(
    "available_gib,cpus,jobs",
    [(40, 64, 4), (200, 16, 8), (4, 64, 1), (1000, 1, 1), (95, 256, 10)],
)
def test_jobs_fit_the_free_memory_and_half_the_cpus(available_gib, cpus, jobs):
    assert max_jobs(available_gib, cpus) == jobs


def test_the_gpu_present_sets_the_architectures_and_memory_the_jobs(monkeypatch):
    import psutil
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H200")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": 100 * 2**30}))
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    values, why = build_environment({})
    assert values == {"NVCC_THREADS": "4", "FLASH_ATTN_CUDA_ARCHS": "90", "MAX_JOBS": "11"}
    assert "NVIDIA H200" in why and "100 GiB available" in why
    values, why = build_environment({"MAX_JOBS": "2", "FLASH_ATTN_CUDA_ARCHS": "80;90"})
    assert values["MAX_JOBS"] == "2" and values["FLASH_ATTN_CUDA_ARCHS"] == "80;90"
