"""Every experiment preset composes into a checked run, and runs one optimizer step of a
tiny-shaped version on CPU.

The tiny version keeps the preset's strategy, factor, trainer (ZeRO-3, optimizer, gradient
checkpointing, tiling) and global batch; only the model (tiny), the data (embedded corpus,
256-token sequences), the step count and k (scaled to the tiny head_dim) shrink. The fast tier
composes and checks every preset and runs one step of one preset per code path
(`FAST_RUNS`); the slow tier runs one step of every preset.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import pytest
from omegaconf import OmegaConf

from dprope.cli import CONFIG_DIR, compose_config, group_options
from dprope.train.config import RunConfig, TrainerConfig
from dprope.train.loop import train

PRESETS = group_options("experiment")
EXPECTED_ROPE_TYPE = {"pi": "linear", "yarn": "yarn", "dprope": "longrope"}
# One tiny step in the fast tier per strategy and per trainer code path (`code_path`); the
# other presets repeat one of these paths and run in the slow tier.
FAST_RUNS = {
    "tiny_cpu_pi": "trainer=tiny, PI",
    "tiny_cpu_yarn": "trainer=tiny, YaRN",
    "tiny_cpu_ours": "trainer=tiny, DPRoPE",
    "llama7b_8k_ours": "the paper's trainer: ZeRO-3, gradient checkpointing, 8 micro-batches a step",
    "llama7b_64k_ours": "long contexts: the paper's trainer with tiled MLP and loss, 2 micro-batches a step",
    "llama7b_128k_yarn": "long contexts at one micro-batch a step",
}


def compose_preset(name: str, overrides: list[str]):
    return compose_config("train", [f"+experiment={name}", *overrides])


def test_the_paper_settings_are_all_there():
    paper = [p for p in PRESETS if p.startswith("llama") and p.split("_")[1] in ("8k", "16k")]
    assert len(paper) == 12
    for name in paper:
        cfg = compose_preset(name, [])
        size, context, method = name.removeprefix("llama").split("_")
        assert cfg.model.name == f"llama2-{size}"
        assert cfg.data.name == "pg19"
        assert cfg.trainer.global_batch_size == 64 and cfg.trainer.lr == 2e-5 and cfg.trainer.zero_stage == 3
        factor, steps, length, k = (2.0, 1000, 8192, 80) if context == "8k" else (4.0, 500, 16384, 64)
        assert (cfg.rope.factor, cfg.trainer.steps, cfg.data.max_length) == (factor, steps, length)
        assert cfg.rope.name == {"ours": "dprope"}.get(method, method)
        if method == "ours":
            assert cfg.rope.num_interpolated_dims == k
        first_lines = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()[:5]
        assert any(f"+experiment={name}" in line for line in first_lines)
        assert any(f"{steps} steps x 64 sequences x {length}" in line for line in first_lines)


# k: the per-pair argmin of `python launch/analyze.py model=llama2_7b rope=dprope rope.factor=S`
LONG_CONTEXT = {
    "32k": (8.0, 32768, 32, 2, 84),
    "64k": (16.0, 65536, 16, 4, 90),
    "128k": (32.0, 131072, 8, 8, 102),
}


def test_the_long_context_settings_keep_the_16k_tokens_per_step():
    for context, (factor, length, batch, sp, k) in LONG_CONTEXT.items():
        for method in ("pi", "yarn", "ours"):
            name = f"llama7b_{context}_{method}"
            cfg = compose_preset(name, [])
            assert (cfg.rope.factor, cfg.data.max_length, cfg.trainer.global_batch_size) == (
                factor,
                length,
                batch,
            )
            assert batch * length == 64 * 16384 and cfg.trainer.steps == 500
            assert cfg.trainer.sequence_parallel_size == sp and cfg.trainer.tiled_compute
            assert length // sp == 16384  # each of the 8 GPUs holds a 16k slice, as in the 16k setting
            assert batch % 8 == 0  # global batch divisible by micro x 8 GPUs
            if method == "ours":
                assert cfg.rope.num_interpolated_dims == k
            head = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()[:5]
            assert any(f"500 steps x {batch} sequences x {length}" in line for line in head)


@functools.cache
def tiny_overrides(name: str) -> tuple[str, ...]:
    """The overrides that shrink preset ``name`` to a one-step CPU run (output and cache dirs
    apart)."""
    cfg = compose_preset(name, [])
    overrides = [
        "model=tiny",
        "data=embedded",
        "data.max_length=256",
        "trainer.steps=1",
        "trainer.save_every=0",
        f"trainer.micro_batch_size={min(8, cfg.trainer.global_batch_size)}",
        "logger=none",
        "trainer.sequence_parallel_size=1",  # one CPU process
    ]
    k = cfg.rope.get("num_interpolated_dims")
    if k is not None:  # the tiny model's head_dim is 16; k stays even (2 dims per rotary pair)
        overrides.append(f"rope.num_interpolated_dims={k * 16 // cfg.model.head_dim // 2 * 2}")
    return tuple(overrides)


@functools.cache
def tiny_run(name: str) -> RunConfig:
    return RunConfig.from_config(compose_preset(name, list(tiny_overrides(name))))


def code_path(run: RunConfig) -> tuple:
    """What decides which trainer code a tiny run goes through: every switch of the trainer (its
    flags and choices, the ZeRO stage) and whether a step accumulates micro-batches."""
    trainer = run.trainer
    switches = {
        f.name: getattr(trainer, f.name)
        for f in dataclasses.fields(TrainerConfig)
        if isinstance(getattr(trainer, f.name), (bool, str)) and f.name not in ("output_dir", "resume")
    }
    return (*sorted(switches.items()), trainer.zero_stage, trainer.accumulation_steps(1) > 1)


def check_export(rope_parameters: dict, run: RunConfig) -> None:
    assert rope_parameters["rope_type"] == EXPECTED_ROPE_TYPE[run.rope.name]
    if run.rope.name == "dprope":
        k = run.rope.num_interpolated_dims
        assert 2 * sum(f > 1 for f in rope_parameters["short_factor"]) == k


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_into_a_checked_run(name):
    """The preset at full size builds its run and fits its 8 GPUs; its tiny version builds, fits
    one CPU process and has the strategy's exported rope parameters (as its one-step run would)."""
    full = RunConfig.from_config(compose_preset(name, []))
    if not name.startswith("tiny"):
        assert full.trainer.accumulation_steps(8) >= 1
    tiny = tiny_run(name)
    assert (tiny.rope.name, tiny.rope.factor, tiny.trainer.global_batch_size) == (
        full.rope.name,
        full.rope.factor,
        full.trainer.global_batch_size,
    )
    assert tiny.trainer.accumulation_steps(1) == full.trainer.global_batch_size // min(
        8, full.trainer.global_batch_size
    )
    check_export(tiny.model.hf_config(tiny.rope).rope_parameters, tiny)


def test_the_fast_runs_cover_every_strategy_and_trainer_path():
    runs = {name: tiny_run(name) for name in PRESETS}
    fast = [runs[name] for name in FAST_RUNS]
    assert {run.rope.name for run in runs.values()} == {run.rope.name for run in fast}
    assert {code_path(run) for run in runs.values()} == {code_path(run) for run in fast}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=() if name in FAST_RUNS else pytest.mark.slow) for name in PRESETS]
)
def test_preset_runs_one_tiny_step(name, tmp_path, data_cache):
    overrides = [*tiny_overrides(name), f"data.cache_dir={data_cache}", f"trainer.output_dir={tmp_path}"]
    cfg = compose_preset(name, overrides)
    run = RunConfig.from_config(cfg)
    assert train(run, OmegaConf.to_container(cfg, resolve=True)) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 1 and math.isfinite(record["loss"])
    check_export(json.loads((tmp_path / "hf" / "config.json").read_text())["rope_parameters"], run)
