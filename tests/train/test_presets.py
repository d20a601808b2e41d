"""Every experiment preset composes and runs one optimizer step of a tiny-shaped version on CPU.

The preset keeps its strategy, factor, trainer (ZeRO-3, optimizer, gradient checkpointing) and
global batch; only the model (tiny), the data (embedded corpus, 256-token sequences), the step
count and k (scaled to the tiny head_dim) shrink.
"""

from __future__ import annotations

import json
import math

import pytest
from omegaconf import OmegaConf

from dprope.cli import CONFIG_DIR, compose_config, group_options
from dprope.train.config import RunConfig
from dprope.train.loop import train

PRESETS = group_options("experiment")
EXPECTED_ROPE_TYPE = {"pi": "linear", "yarn": "yarn", "dprope": "longrope"}


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


@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_one_tiny_step(name, tmp_path, data_cache):
    cfg = compose_preset(name, [])
    overrides = [
        "model=tiny",
        "data=embedded",
        f"data.cache_dir={data_cache}",
        "data.max_length=256",
        "trainer.steps=1",
        "trainer.save_every=0",
        f"trainer.micro_batch_size={min(8, cfg.trainer.global_batch_size)}",
        f"trainer.output_dir={tmp_path}",
        "logger=none",
        "trainer.sequence_parallel_size=1",  # one CPU process
    ]
    k = cfg.rope.get("num_interpolated_dims")
    # the tiny model's head_dim is 16; k stays even (2 dims per rotary pair)
    tiny_k = None if k is None else k * 16 // cfg.model.head_dim // 2 * 2
    if tiny_k is not None:
        overrides.append(f"rope.num_interpolated_dims={tiny_k}")
    cfg = compose_preset(name, overrides)
    run = RunConfig.from_config(cfg)
    assert train(run, OmegaConf.to_container(cfg, resolve=True)) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 1 and math.isfinite(record["loss"])
    exported = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert exported["rope_parameters"]["rope_type"] == EXPECTED_ROPE_TYPE[run.rope.name]
    if tiny_k is not None:
        factors = exported["rope_parameters"]["short_factor"]
        assert 2 * sum(f > 1 for f in factors) == tiny_k
