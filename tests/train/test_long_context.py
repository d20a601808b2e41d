"""DeepSpeed's long-sequence parts in the trainer: tiled compute against untiled in one process;
Ulysses SP=2 on two CPU processes (gloo) against SP=1, and its exact resume (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dprope.config import ConfigError
from dprope.train.config import TrainerConfig
from dprope.train.engine import deepspeed_config
from dprope.train.long_context import check_long_context, logits_shards, mlp_shards, shift_labels
from tests.train.conftest import (
    ROOT,
    TRAIN,
    launch,
    materialised,
    read_metrics,
    small_run,
    tiny_plan,
    train_env,
)


def heads(attention: int = 4, kv: int = 4):
    from transformers import LlamaConfig

    return LlamaConfig(
        num_attention_heads=attention, num_key_value_heads=kv, hidden_size=16 * attention, head_dim=16
    )


@pytest.mark.parametrize(
    "size,config,length,attention,field",
    [
        (8, heads(4, 4), 256, "sdpa", "trainer.sequence_parallel_size"),  # 8 does not divide 4 heads
        (4, heads(8, 6), 256, "sdpa", "trainer.sequence_parallel_size"),  # 4 and 6 kv heads
        (2, heads(4, 4), 255, "sdpa", "trainer.sequence_parallel_size"),  # odd sequence length
        (2, heads(4, 4), 256, "eager", "trainer.attn_implementation"),
    ],
)
def test_sequence_parallel_requirements_name_the_field(size, config, length, attention, field):
    trainer = TrainerConfig(global_batch_size=8, sequence_parallel_size=size)
    with pytest.raises(ConfigError) as err:
        check_long_context(trainer, config, length, attention)
    assert err.value.field == field


def test_sequence_parallel_accepts_what_the_library_runs():
    trainer = TrainerConfig(global_batch_size=8, sequence_parallel_size=4)
    check_long_context(trainer, heads(8, 2), 256, "sdpa")  # 2 kv heads replicated over 4 ranks
    check_long_context(trainer, heads(8, 8), 256, "flash_attention_2")


def test_qwen2_5_heads_list_the_sequence_parallel_sizes_that_work():
    """28 query and 4 key/value heads (Qwen2.5-7B): 4 kv heads would be replicated at SP=8, but 28
    query heads do not split over 8; the error lists the sizes DeepSpeed's Ulysses runs."""
    config = heads(28, 4)
    for size in (2, 4, 7, 8, 14, 28):
        trainer = TrainerConfig(global_batch_size=size, sequence_parallel_size=size)
        if size in (2, 4, 28):
            check_long_context(trainer, config, 28 * 256, "sdpa")
        else:
            with pytest.raises(ConfigError, match="sizes that work: 1, 2, 4, 28$"):
                check_long_context(trainer, config, 28 * 256, "sdpa")


def test_every_attention_mode_runs_with_sequence_parallelism():
    for mode in ("causal", "document", "anchor"):
        trainer = TrainerConfig(global_batch_size=8, sequence_parallel_size=2, attention=mode)
        for kernel in ("sdpa", "flash_attention_2", "flex_attention"):
            check_long_context(trainer, heads(), 256, kernel)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"sequence_parallel_size": 0}, "sequence_parallel_size"),
        ({"sequence_parallel_size": 2, "zero_stage": 2}, "sequence_parallel_size"),
        ({"tiled_shards": 0}, "tiled_shards"),
        ({"offload_activations": True, "gradient_checkpointing": False}, "offload_activations"),
    ],
)
def test_bad_long_context_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        TrainerConfig(**kwargs)
    assert err.value.field == field


def test_batch_arithmetic_counts_data_parallel_replicas():
    trainer = TrainerConfig(global_batch_size=16, micro_batch_size=1, sequence_parallel_size=4)
    # 8 GPUs = 2 replicas x 4 ranks per sequence: 16 sequences = 1 x 8 accumulation x 2 replicas
    assert trainer.data_parallel_size(8) == 2
    assert trainer.accumulation_steps(8) == 8 and trainer.accumulation_steps(8) % 4 == 0
    ds = deepspeed_config(trainer, world_size=8, precision="bf16")
    assert ds["sequence_parallel_size"] == 4 and ds["gradient_accumulation_steps"] == 8
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * 8 * 2
    with pytest.raises(ConfigError, match="does not divide the world size 6"):
        trainer.accumulation_steps(6)
    with pytest.raises(ConfigError) as err:  # 4 sequences cannot fill a multiple of 4 turns on 8 GPUs
        TrainerConfig(global_batch_size=4, sequence_parallel_size=4).accumulation_steps(8)
    assert err.value.field == "trainer.global_batch_size"
    assert "sequence_parallel_size" not in deepspeed_config(TrainerConfig(), 8, "bf16")


def test_labels_are_shifted_before_any_split_and_tiles_follow_the_shapes():
    labels = torch.tensor([[5, 6, 7, 8, 9, 10]])
    assert shift_labels(labels).tolist() == [[6, 7, 8, 9, 10, -100]]
    # the first of two slices keeps the label of the second slice's first token (8)
    assert shift_labels(labels)[:, :3].tolist() == [[6, 7, 8]]
    assert mlp_shards(None, 131072 // 8, 4096) == 4  # ALST: tiles of hidden_size tokens
    assert mlp_shards(3, 100, 4096) == 3
    assert logits_shards(None, 16384, 32000) == 2  # 16384 x 32000 x 4 bytes = 1.95 GiB
    assert logits_shards(5, 16384, 32000) == 5


def _engine_loss_and_grads(tiny_model_cfg, tiled: bool):
    """One micro-step of the tiny model (ZeRO-3, gradient checkpointing) on a fixed batch whose
    second row ends with padding (-100 labels)."""
    from deepspeed.utils import safe_get_full_grad

    from dprope.rope.registry import rope_config
    from dprope.train.micro_step import PlainStep, TiledLossStep

    trainer = TrainerConfig(
        global_batch_size=2, micro_batch_size=2, tiled_compute=tiled, tiled_shards=4, output_dir="unused"
    )
    plan = tiny_plan(tiny_model_cfg, trainer, rope_config({"name": "pi", "factor": 2.0}), seq_len=128)
    built = materialised(plan)
    engine = built.engine
    assert type(built.micro_step) is (TiledLossStep if tiled else PlainStep)
    input_ids = torch.randint(3, 260, (2, 128), generator=torch.Generator().manual_seed(0))
    labels = input_ids.clone()
    labels[1, 90:] = -100
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": torch.arange(128).expand(2, -1)}
    loss = built.micro_step(batch)
    model = engine.module
    weights = {
        "lm_head": model.lm_head.weight,
        "mlp": model.model.layers[0].mlp.down_proj.weight,
        "attention": model.model.layers[1].self_attn.q_proj.weight,
        "embedding": model.model.embed_tokens.weight,
    }
    grads = {name: safe_get_full_grad(weight).clone() for name, weight in weights.items()}
    patched = model.model.layers[0].mlp.forward.__name__ == "tiled_forward"
    return float(loss), grads, patched


def test_tiled_compute_gives_the_untiled_loss_and_gradients(tiny_model_cfg):
    loss, grads, patched = _engine_loss_and_grads(tiny_model_cfg, tiled=False)
    tiled_loss, tiled_grads, tiled_patched = _engine_loss_and_grads(tiny_model_cfg, tiled=True)
    assert tiled_patched and not patched  # the tiled run really ran DeepSpeed's TiledMLP
    assert tiled_loss == pytest.approx(loss, rel=1e-6)
    for name, grad in grads.items():
        assert grad.abs().sum() > 0
        torch.testing.assert_close(tiled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_sequence_parallel_size_beyond_the_heads_fails_before_the_model_loads(tmp_path, data_cache):
    overrides = [
        *small_run(tmp_path, data_cache),
        "trainer.sequence_parallel_size=8",
        "trainer.global_batch_size=8",
        "trainer.micro_batch_size=1",
    ]
    process = launch(overrides, env=train_env(WORLD_SIZE="8"))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    lines = stderr.strip().splitlines()
    assert lines == [
        "error: trainer.sequence_parallel_size: 8 cannot split the model's 4 query and 4 key/value heads "
        "(DeepSpeed Ulysses needs heads divisible by it and key/value heads dividing it or divisible by it); "
        "sizes that work: 1, 2, 4"
    ]


# ---- two CPU processes (gloo): SP=2 against SP=1, and exact resume --------------------------

STEPS = 10
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def sp_run(output_dir, data_cache, *extra):
    return small_run(output_dir, data_cache, f"trainer.steps={STEPS}", "trainer.save_every=3", *extra)


def run(overrides, launcher=None):
    process = launch(overrides, launcher=launcher)
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory, data_cache):
    out = tmp_path_factory.mktemp("sp1")
    run(sp_run(out, data_cache))
    return out


def exported_weights(output_dir):
    from safetensors.torch import load_file

    return load_file(output_dir / "hf" / "model.safetensors")


def assert_same_training(run_dir, reference_dir):
    ours, reference = read_metrics(run_dir), read_metrics(reference_dir)
    assert [r["step"] for r in ours] == list(range(1, STEPS + 1))
    # the loss is the token-weighted mean over whole sequences, the gradient (norm) the one-GPU one;
    # only the order of floating-point reductions differs
    assert [r["loss"] for r in ours] == pytest.approx([r["loss"] for r in reference], rel=1e-5)
    assert [r["grad_norm"] for r in ours] == pytest.approx([r["grad_norm"] for r in reference], rel=1e-4)
    # ten AdamW updates later every weight agrees: the gradients agreed element by element
    ours, reference = exported_weights(run_dir), exported_weights(reference_dir)
    for name, weight in reference.items():
        torch.testing.assert_close(ours[name], weight, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_ulysses_attention_stays_on_the_trained_model():
    # two processes: DeepSpeed's registration would route every later model's sdpa through Ulysses
    command = [*TORCHRUN, "-m", "tests.train.ulysses_scope"]
    done = subprocess.run(command, cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "ulysses scope: ok" in done.stdout


@pytest.mark.slow
def test_sequence_parallel_on_two_processes_trains_as_one(single_process_run, tmp_path, data_cache):
    stdout = run(sp_run(tmp_path, data_cache, "trainer.sequence_parallel_size=2"), launcher=TORCHRUN)
    assert "world 2 x micro 2 x accumulation 2 / sequence parallel 2" in stdout
    assert_same_training(tmp_path, single_process_run)


@pytest.mark.slow
def test_sequence_parallel_tiled_run_resumes_exactly_after_sigkill(single_process_run, tmp_path, data_cache):
    overrides = sp_run(
        tmp_path / "killed", data_cache, "trainer.sequence_parallel_size=2", "trainer.tiled_compute=true"
    )
    reference = tmp_path / "uninterrupted"
    output = run(
        sp_run(reference, data_cache, "trainer.sequence_parallel_size=2", "trainer.tiled_compute=true"),
        TORCHRUN,
    )
    assert "tiled MLP in 2 module(s)" in output
    assert_same_training(reference, single_process_run)  # SP and tiling together

    killed = tmp_path / "killed"
    command = [*TORCHRUN, str(TRAIN), *overrides]
    log = tmp_path / "killed.log"
    with open(log, "w") as handle:  # a file, not a pipe nobody reads while the run writes
        process = subprocess.Popen(
            command, cwd=ROOT, env=train_env(), stdout=handle, stderr=handle, start_new_session=True
        )
    deadline = time.monotonic() + 600
    while len(read_metrics(killed)) < 4:  # past the checkpoint of step 3
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(read_metrics(killed)) < STEPS
    run(overrides, launcher=TORCHRUN)  # trainer.resume=auto
    assert [r["loss"] for r in read_metrics(killed)] == [r["loss"] for r in read_metrics(reference)]
    assert [r["grad_norm"] for r in read_metrics(killed)] == [r["grad_norm"] for r in read_metrics(reference)]


@pytest.mark.slow
def test_sequence_parallel_with_fewer_key_value_heads_than_ranks_trains_as_one(tmp_path, data_cache):
    """One key/value head (4 query heads) at SP=2: DeepSpeed replicates the key/value head over the
    two ranks; the losses, gradient norms and weights equal the one-process run's."""
    mqa = ("model.num_key_value_heads=1",)
    reference = tmp_path / "sp1"
    run(sp_run(reference, data_cache, *mqa))
    stdout = run(sp_run(tmp_path / "sp2", data_cache, *mqa, "trainer.sequence_parallel_size=2"), TORCHRUN)
    assert "sequence parallel 2" in stdout
    assert_same_training(tmp_path / "sp2", reference)
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "sp2" / "hf" / "model.safetensors")
    assert weights["model.layers.0.self_attn.k_proj.weight"].shape == (16, 64)  # one key/value head
