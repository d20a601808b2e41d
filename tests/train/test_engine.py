"""DeepSpeed wrapping: generated config, batch arithmetic, and rotary precision under bf16."""

from __future__ import annotations

import pytest
import torch

from dprope.config import ConfigError
from dprope.rope.registry import default_config
from dprope.train.config import TrainerConfig
from dprope.train.engine import deepspeed_config
from dprope.train.plan import resolve_precision
from dprope.train.transforms import rotary_modules
from tests.train.conftest import materialised, tiny_plan


def test_deepspeed_config_carries_the_paper_optimisation():
    trainer = TrainerConfig(global_batch_size=64, micro_batch_size=1)
    ds = deepspeed_config(trainer, world_size=8, precision="bf16")
    assert ds["train_batch_size"] == 64
    assert ds["gradient_accumulation_steps"] == 8
    assert ds["optimizer"]["type"] == "AdamW"
    assert ds["optimizer"]["params"]["betas"] == [0.9, 0.999]
    assert ds["optimizer"]["params"]["lr"] == 2e-5
    assert ds["optimizer"]["params"]["weight_decay"] == 0.0
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["bf16"]["enabled"] is True
    assert "scheduler" not in ds  # no warmup


def test_offload_and_warmup_are_generated():
    trainer = TrainerConfig(offload_optimizer=True, offload_params=True, warmup_steps=10)
    ds = deepspeed_config(trainer, world_size=1, precision="fp32")
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["scheduler"]["params"]["warmup_num_steps"] == 10


@pytest.mark.parametrize("world_size", [3, 5])
def test_global_batch_must_divide_by_micro_times_world(world_size):
    trainer = TrainerConfig(global_batch_size=64, micro_batch_size=2)
    with pytest.raises(ConfigError, match="global_batch_size"):
        trainer.accumulation_steps(world_size)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"global_batch_size": 10, "micro_batch_size": 4}, "global_batch_size"),
        ({"steps": 0}, "steps"),
        ({"precision": "fp8"}, "precision"),
        ({"zero_stage": 4}, "zero_stage"),
        ({"betas": [0.9]}, "betas"),
        ({"offload_params": True, "zero_stage": 2}, "offload_params"),
        ({"dist_timeout_minutes": 0}, "dist_timeout_minutes"),
    ],
)
def test_bad_trainer_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        TrainerConfig(**kwargs)
    assert err.value.field == field


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_bf16_without_gpu_is_refused():
    with pytest.raises(ConfigError, match="trainer.precision"):
        resolve_precision(TrainerConfig(precision="bf16"))
    assert resolve_precision(TrainerConfig(precision="auto")) == "fp32"


def test_rotary_frequencies_stay_float32_after_bf16_deepspeed_init(tiny_model_cfg, tmp_path):
    """DeepSpeed's bf16 cast must not reach the rotary frequencies (docs/method-notes.md, section 8)."""
    rope = default_config("dprope", 4.0)
    trainer = TrainerConfig(
        output_dir=str(tmp_path), global_batch_size=2, micro_batch_size=2, gradient_checkpointing=False
    )
    plan = tiny_plan(tiny_model_cfg, trainer, rope, precision="bf16")  # bf16 on CPU: forced here
    engine, scaling = materialised(plan).engine, plan.scaling
    assert next(engine.module.parameters()).dtype == torch.bfloat16
    modules = rotary_modules(engine.module)
    assert modules
    for rotary in modules:
        assert rotary.inv_freq.dtype == torch.float32
        assert torch.equal(rotary.inv_freq, scaling.inv_freq)
    # the angles the model applies beyond L are the strategy's, computed in float32
    length = 3 * tiny_model_cfg.original_max_position_embeddings
    cos, _ = modules[0](torch.zeros(1, length, 64, dtype=torch.float32), torch.arange(length)[None])
    angles = torch.arange(length, dtype=torch.float32)[:, None] * scaling.inv_freq[None]
    assert torch.equal(cos[0], torch.cat([angles, angles], -1).cos())


def test_restore_undoes_a_bf16_cast_of_the_buffers(tiny_model_cfg):
    from transformers import LlamaForCausalLM

    from dprope.train.transforms import restore_rotary_frequencies

    rope = default_config("yarn", 4.0)
    model = LlamaForCausalLM(tiny_model_cfg.hf_config(rope)).bfloat16()
    (rotary,) = rotary_modules(model)
    assert rotary.inv_freq.dtype == torch.bfloat16
    scaling = tiny_model_cfg.scaling(rope)
    assert restore_rotary_frequencies(model, scaling.inv_freq) == 1
    assert rotary.inv_freq.dtype == torch.float32 and torch.equal(rotary.inv_freq, scaling.inv_freq)


def test_universal_loading_is_asked_only_for_a_resume_on_another_world_size():
    trainer = TrainerConfig(global_batch_size=4, micro_batch_size=2)
    assert "checkpoint" not in deepspeed_config(trainer, world_size=1, precision="fp32")
    universal = deepspeed_config(trainer, world_size=1, precision="fp32", load_universal=True)
    assert universal["checkpoint"] == {"load_universal": True}


def test_long_default_process_group_timeout():
    assert TrainerConfig().dist_timeout_minutes == 60  # rank 0 may build a cache or write 13B meanwhile


def test_only_the_two_collective_deprecations_are_filtered():
    import warnings

    from dprope.train.engine import silence_collective_deprecations

    def warn(message, module):
        exec(
            compile(f"warnings.warn({message!r}, FutureWarning)", module, "exec"),
            {"warnings": warnings, "__name__": module},
        )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_collective_deprecations()
        c10d = "torch.distributed.c10d_logger"
        warn("`torch.distributed.all_gather_into_tensor` is deprecated. Please use ...", c10d)
        warn("`torch.distributed.reduce_scatter_tensor` is deprecated. Please use ...", c10d)
        warn("`torch.distributed.all_reduce_coalesced` is deprecated.", c10d)  # another op: shown
        warn("`torch.distributed.all_gather_into_tensor` is deprecated.", "mypackage")  # elsewhere: shown
    assert [str(w.message) for w in caught] == [
        "`torch.distributed.all_reduce_coalesced` is deprecated.",
        "`torch.distributed.all_gather_into_tensor` is deprecated.",
    ]


def test_cuda_runs_get_torchs_fused_adamw_which_needs_no_build(tiny_model_cfg, tmp_path, monkeypatch):
    """On CUDA the generated config asks DeepSpeed for torch's fused AdamW, not its FusedAdam
    (compiled on first use with nvcc). DeepSpeed builds exactly that optimizer from it: checked
    on the CPU, where torch's fused AdamW runs too."""
    from dprope import accelerator
    from dprope.train import engine as engine_module

    trainer = TrainerConfig(
        output_dir=str(tmp_path), global_batch_size=2, micro_batch_size=2, gradient_checkpointing=False
    )
    with monkeypatch.context() as cuda:
        cuda.delenv("DS_ACCELERATOR", raising=False)
        cuda.setattr(accelerator, "cuda_visible", lambda: True)
        params = deepspeed_config(trainer, world_size=1, precision="bf16")["optimizer"]["params"]
        offloaded = deepspeed_config(TrainerConfig(offload_optimizer=True), world_size=1, precision="bf16")[
            "optimizer"
        ]["params"]
    assert params["torch_adam"] is True and params["fused"] is True
    assert offloaded["torch_adam"] is False  # ZeRO-Offload: DeepSpeed's CPU Adam (C++ only)
    monkeypatch.setattr(
        engine_module, "optimizer_choice", lambda cpu, offload: {"torch_adam": True, "fused": True}
    )
    built = materialised(tiny_plan(tiny_model_cfg, trainer))
    optimizer = built.engine.optimizer.optimizer  # inside ZeRO-3's wrapper
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["fused"] is True
    ids = torch.randint(3, 250, (2, 64))
    built.engine.backward(built.engine(input_ids=ids, labels=ids).loss)
    built.engine.step()
    assert optimizer.state  # the fused step ran


def test_rotary_frequencies_are_the_strategys_after_a_training_step(tiny_model_cfg, tmp_path, monkeypatch):
    """transformers' longrope update (the DPRoPE export) copies ``long_inv_freq`` into
    ``inv_freq`` on every forward beyond L, computing it on the input's device when it is missing;
    a GPU's pow rounds differently from the CPU's. Emulated here by a computation one ulp off:
    after a training step beyond L the frequencies must still be exactly the strategy's."""
    from transformers import modeling_rope_utils

    from dprope.data import collate_packed
    from dprope.train.stepper import Stepper

    longrope = modeling_rope_utils.ROPE_INIT_FUNCTIONS["longrope"]

    def device_rounded(config, device=None, **kwargs):
        inv_freq, scale = longrope(config, device, **kwargs)
        return torch.nextafter(inv_freq, torch.zeros_like(inv_freq)), scale

    monkeypatch.setitem(modeling_rope_utils.ROPE_INIT_FUNCTIONS, "longrope", device_rounded)
    length = 2 * tiny_model_cfg.original_max_position_embeddings
    trainer = TrainerConfig(
        output_dir=str(tmp_path), global_batch_size=2, micro_batch_size=2, gradient_checkpointing=False
    )
    plan = tiny_plan(tiny_model_cfg, trainer, default_config("dprope", 4.0), seq_len=length)
    assert plan.hf_config.rope_parameters["rope_type"] == "longrope"
    built = materialised(plan)
    rows = torch.randint(3, 250, (2, length))
    batches = iter([collate_packed([{"input_ids": row, "doc_starts": torch.tensor([0])} for row in rows])])
    Stepper(built.engine, built.micro_step, batches, plan.accumulation, torch.device("cpu")).step()
    modules = rotary_modules(built.engine.module)
    assert modules
    for rotary in modules:
        assert rotary.inv_freq.dtype == torch.float32
        assert torch.equal(rotary.inv_freq, plan.scaling.inv_freq)
        assert torch.equal(rotary.long_inv_freq, plan.scaling.inv_freq)
