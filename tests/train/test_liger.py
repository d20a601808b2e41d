"""`trainer.kernels` and `trainer.grad_accum_dtype`: validation, one-line errors before the model
loads, and the gradient accumulation dtype DeepSpeed's ZeRO-3 optimizer really uses."""

from __future__ import annotations

import pytest
import torch

from dprope.config import ConfigError
from dprope.rope.registry import default_config
from dprope.train.config import TrainerConfig
from dprope.train.liger import resolve_kernels
from dprope.train.plan import check_grad_accum_dtype
from tests.train.conftest import assert_one_line_error, materialised, run_train, small_run, tiny_plan


@pytest.mark.parametrize(
    "kwargs,field",
    [({"kernels": "fused"}, "kernels"), ({"grad_accum_dtype": "int8"}, "grad_accum_dtype")],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        TrainerConfig(**kwargs)
    assert err.value.field == field


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU choice")
def test_auto_is_none_and_liger_is_refused_without_cuda():
    assert resolve_kernels("auto", "llama") == "none"
    assert resolve_kernels("none", "llama") == "none"
    with pytest.raises(ConfigError, match="trainer.kernels: liger needs a CUDA GPU"):
        resolve_kernels("liger", "llama")


def test_fp32_accumulation_needs_a_zero_optimizer():
    with pytest.raises(ConfigError, match="trainer.grad_accum_dtype"):
        check_grad_accum_dtype(TrainerConfig(zero_stage=0), "bf16")
    check_grad_accum_dtype(TrainerConfig(zero_stage=0, grad_accum_dtype="bf16"), "bf16")
    check_grad_accum_dtype(TrainerConfig(zero_stage=0), "fp32")


@pytest.mark.parametrize(
    "override,field",
    [
        ("trainer.kernels=liger", "trainer.kernels"),
        ("trainer.grad_accum_dtype=int8", "trainer.grad_accum_dtype"),
    ],
)
def test_bad_kernel_input_fails_in_one_line_before_the_model_loads(override, field, tmp_path, data_cache):
    if override == "trainer.kernels=liger" and torch.cuda.is_available():
        pytest.skip("liger may run with a GPU")
    result = run_train([*small_run(tmp_path, data_cache), override], timeout=120)
    assert_one_line_error(result, field)
    assert not (tmp_path / "config.yaml").exists()  # stopped before any work


@pytest.mark.parametrize("dtype,expected", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_zero3_accumulates_bf16_gradients_in_the_configured_dtype(dtype, expected, tiny_model_cfg, tmp_path):
    trainer = TrainerConfig(
        output_dir=str(tmp_path),
        global_batch_size=2,
        micro_batch_size=1,
        gradient_checkpointing=False,
        grad_accum_dtype=dtype,
    )
    built = materialised(tiny_plan(tiny_model_cfg, trainer, default_config("pi", 2.0), precision="bf16"))
    engine, ds_config = built.engine, built.ds_config
    assert ds_config["data_types"] == {"grad_accum_dtype": dtype}
    assert next(engine.module.parameters()).dtype == torch.bfloat16
    # the flat buffer each micro-step's gradient partition is added into
    assert engine.optimizer.grad_partitions_flat_buffer.dtype == expected


def test_kernel_patching_stays_on_the_instance(tiny_model_cfg):
    """What a kernel library writes into the modelling module (as Liger's apply functions do) is
    undone once the instance is patched: models built later in the process stay plain HF."""
    from transformers import LlamaForCausalLM
    from transformers.models.llama import modeling_llama

    from dprope.train.liger import _instance_only

    model = LlamaForCausalLM(tiny_model_cfg.hf_config())
    norm_class, rotate, forward = (
        modeling_llama.LlamaRMSNorm,
        modeling_llama.apply_rotary_pos_emb,
        LlamaForCausalLM.forward,
    )
    with _instance_only(model):
        modeling_llama.LlamaRMSNorm = torch.nn.Identity
        modeling_llama.apply_rotary_pos_emb = None
        LlamaForCausalLM.forward = None
        model.forward = lambda *args, **kwargs: "patched"
    assert modeling_llama.LlamaRMSNorm is norm_class and modeling_llama.apply_rotary_pos_emb is rotate
    assert LlamaForCausalLM.forward is forward
    assert model.forward() == "patched"  # the instance keeps its patch


def lce_maybe_trainable_lm_head(model, **loss_kwargs):
    """Stands for Liger's call that hands the loss its keyword arguments."""
    return loss_kwargs


def fused_forward(self, **kwargs):  # the shape of Liger's lce_forward: it calls the loss by name
    return lce_maybe_trainable_lm_head(self, **kwargs)


def test_the_loss_calls_of_the_instance_forward_get_the_accumulation_dtype():
    import types

    from dprope.train.liger import accumulate_loss_gradients_in

    model, other = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    for module in (model, other):
        module.forward = types.MethodType(fused_forward, module)
    assert accumulate_loss_gradients_in(model, torch.float32)
    assert model.forward(ignore_index=-100) == {"ignore_index": -100, "accum_dtype": torch.float32}
    assert other.forward(ignore_index=-100) == {"ignore_index": -100}  # another instance: untouched
    assert lce_maybe_trainable_lm_head(model) == {}  # the module's function: untouched
    assert not accumulate_loss_gradients_in(torch.nn.Linear(2, 2), torch.float32)  # no fused forward
