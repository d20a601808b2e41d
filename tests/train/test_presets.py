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
import re

import pytest
from omegaconf import OmegaConf

from dprope.cli import CONFIG_DIR, compose_config, group_options
from dprope.train.config import RunConfig, TrainerConfig
from dprope.train.loop import train
from tests.families import tiny_model_overrides


def preset_model_option(name: str) -> str:
    """The `model` option an experiment preset selects."""
    text = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()
    return re.search(r"override /model: (\S+)", text).group(1)


# training experiments (an evaluation baseline such as qwen2_5_7b_128k_official sets no trainer)
PRESETS = [
    p
    for p in group_options("experiment")
    if "override /trainer" in (CONFIG_DIR / "experiment" / f"{p}.yaml").read_text()
]
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
    model = preset_model_option(name)
    # a model of the preset's family and rope type (tests/families.py), LLaMA-2 as `model=tiny`
    shrink = ["model=tiny"] if model in ("tiny", "llama2_7b", "llama2_13b") else tiny_model_overrides(model)
    overrides = [
        *shrink,
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
    # on an already-scaled pre-training RoPE (Llama-3.1's llama3) every strategy composes as longrope
    expected = EXPECTED_ROPE_TYPE[run.rope.name] if run.model.geometry.is_plain else "longrope"
    assert rope_parameters["rope_type"] == expected
    if run.rope.name == "dprope":
        k = run.rope.num_interpolated_dims
        own = run.model.geometry.pretraining_divisors().tolist()  # the model's own divisors (1 if plain)
        assert (
            2 * sum(f / o > 1 + 1e-9 for f, o in zip(rope_parameters["short_factor"], own, strict=True)) == k
        )


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


# the family experiments: factor, sequence length, global batch, SP size, per-pair-argmin k
FAMILY_EXPERIMENTS = {
    "llama3_8b": {
        "32k": (4.0, 32768, 32, 2, 104),
        "64k": (8.0, 65536, 16, 4, 110),
        "128k": (16.0, 131072, 8, 8, 104),
    },
    "qwen2_5_7b": {"64k": (2.0, 65536, 16, 4, 104), "128k": (4.0, 131072, 8, 4, 106)},
    "mistral_7b_v0_3": {"64k": (2.0, 65536, 16, 4, 104), "128k": (4.0, 131072, 8, 8, 106)},
    "llama3_1_8b": {"256k": (2.0, 262144, 8, 8, 112)},
}


def test_the_family_experiments_are_all_there():
    from dprope.train.long_context import ulysses_splits

    names = [
        f"{m}_{c}_{method}"
        for m, runs in FAMILY_EXPERIMENTS.items()
        for c in runs
        for method in ("pi", "yarn", "ours")
    ]
    assert set(names) <= set(PRESETS)
    for model, runs in FAMILY_EXPERIMENTS.items():
        for context, (factor, length, batch, sp, k) in runs.items():
            for method in ("pi", "yarn", "ours"):
                name = f"{model}_{context}_{method}"
                cfg = compose_preset(name, [])
                run = RunConfig.from_config(cfg)
                assert preset_model_option(name) == model
                assert (run.rope.factor, run.data.max_length) == (factor, length)
                assert run.model.geometry.target_length(factor) == length  # s x L is the sequence length
                assert (run.trainer.global_batch_size, run.trainer.sequence_parallel_size) == (batch, sp)
                heads, kv = run.model.num_attention_heads, run.model.num_key_value_heads
                assert ulysses_splits(heads, kv, sp) and run.trainer.tiled_compute
                assert run.trainer.accumulation_steps(8) % sp == 0
                assert length // sp <= 32768  # tokens of a sequence on one GPU
                steps = run.trainer.steps
                assert steps * batch * length == 524_288_000  # the 16k setting's token budget
                head = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()[:5]
                assert any(f"+experiment={name}" in line for line in head)
                assert any(f"{steps} steps x {batch} sequences x {length}" in line for line in head)
                if method == "ours":
                    assert run.rope.num_interpolated_dims == k


@pytest.mark.slow
def test_family_experiments_k_is_the_per_pair_argmin():
    from dprope.rope.registry import default_config
    from tests.families import preset_model

    for model, runs in FAMILY_EXPERIMENTS.items():
        for factor, *_, k in runs.values():
            scaling = preset_model(model).scaling(default_config("dprope", factor))
            assert scaling.details["num_interpolated_dims"] == k, (model, factor)


def test_the_official_qwen2_5_recipe_is_yarn_x4_from_32k(tmp_path):
    """The named baseline composes for evaluation and gives the frequencies transformers computes
    for the model card's rope_scaling (factor 4, original_max_position_embeddings 32768)."""
    import torch
    from transformers import Qwen2Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from dprope.eval.job import EvalJob
    from dprope.model import apply_rope

    cfg = compose_config("evaluate", ["+experiment=qwen2_5_7b_128k_official"])
    job = EvalJob.from_config(cfg)
    assert job.model.name == "qwen2.5-7b-yarn-official" and job.model.pretrained == "Qwen/Qwen2.5-7B"
    official = Qwen2Config(
        hidden_size=3584, num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=131072,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
        rope_theta=1e6,
    )  # fmt: skip
    ours = Qwen2Config(
        hidden_size=3584, num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=131072,
        rope_theta=1e6,
    )  # fmt: skip
    scaling = apply_rope(ours, job.rope, job.model)
    assert ours.max_position_embeddings == 131072
    theirs, attention = ROPE_INIT_FUNCTIONS["yarn"](official, "cpu")
    assert torch.equal(scaling.inv_freq, theirs) and scaling.attention_factor == pytest.approx(attention)
