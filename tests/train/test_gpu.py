"""On one CUDA device: a bf16 ZeRO-3 training step (with the rotary frequencies exactly the
strategy's after it), Liger kernels against plain HF (also with a partitioned lm_head), flash-attn's
varlen segments, per-step peak memory, and the export loading back on the GPU (`make test-gpu`)."""

from __future__ import annotations

import gc
import importlib.util
import math

import pytest
import torch
from omegaconf import OmegaConf

from dprope.cli import compose_config
from dprope.data import collate_packed
from dprope.rope.registry import default_config
from dprope.train.attention import ATTENTION_MODES
from dprope.train.config import RunConfig, TrainerConfig
from dprope.train.engine import build_model, model_hf_config
from dprope.train.metrics import peak_flops
from dprope.train.transforms import rotary_modules
from tests.train.conftest import materialised, run_train, small_run, tiny_plan

pytestmark = pytest.mark.gpu

# a small LLaMA-shaped model: 4 layers, hidden 256, 4 heads of 64 (flash-attn and Triton friendly)
SMALL_LLAMA = [
    "model=tiny",
    "model.hidden_size=256",
    "model.num_hidden_layers=4",
    "model.num_attention_heads=4",
    "model.num_key_value_heads=4",
    "model.head_dim=64",
    "model.intermediate_size=688",
]


def model_inputs(batch: dict, implementation: str, device) -> dict:
    return ATTENTION_MODES["causal"].inputs(batch, implementation, device, torch.bfloat16)


def _batch(rows: int, length: int, vocab: int = 260, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    items = [
        {
            "input_ids": torch.randint(4, vocab, (length,), generator=generator),
            "doc_starts": torch.tensor([0]),
        }
        for _ in range(rows)
    ]
    return collate_packed(items)


def _small_model_cfg(vocab_size: int = 260):
    from dprope.model import ModelConfig

    return ModelConfig(
        name="small",
        tokenizer="byte",
        vocab_size=vocab_size,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=64,
        intermediate_size=688,
    )


def test_bf16_zero3_training_step(tmp_path, data_cache):
    from tqdm.auto import tqdm

    from dprope.train.loop import set_up

    overrides = [
        *SMALL_LLAMA,
        "data=embedded",
        f"data.cache_dir={data_cache}",
        "data.max_length=512",
        "rope=dprope",
        "rope.factor=2",
        "trainer=tiny",
        "trainer.steps=1",
        "trainer.global_batch_size=2",
        "trainer.micro_batch_size=1",  # two micro-steps: the accumulation path
        "trainer.gradient_checkpointing=true",
        f"trainer.output_dir={tmp_path}",
        "logger=none",
    ]
    if peak_flops(None) is None:  # a GPU missing from the table: its peak must be given
        overrides.append("trainer.peak_tflops=100")
    cfg = compose_config("train", overrides)
    plain = OmegaConf.to_container(cfg, resolve=True)
    run = RunConfig.from_config(cfg)
    training = set_up(run, plain)
    try:
        assert next(training.engine.module.parameters()).dtype == torch.bfloat16
        assert training.engine.optimizer.grad_partitions_flat_buffer.dtype == torch.float32
        result = training.step()
        record = training.record(result, tqdm(disable=True))
        assert math.isfinite(result.loss) and math.isfinite(result.grad_norm)
        modules = rotary_modules(training.engine.module)
        assert modules
        for rotary in modules:  # after a step beyond L: the longrope update ran on the GPU
            assert rotary.inv_freq.dtype == torch.float32
            assert torch.equal(rotary.inv_freq.cpu(), training.plan.scaling.inv_freq)
            assert torch.equal(rotary.long_inv_freq.cpu(), training.plan.scaling.inv_freq)
        assert 0 < record["mfu"] < 1
    finally:
        training.close()


def _loss_and_grads(kernels: str, batch: dict, tmp_path, model_cfg=None) -> tuple[float, dict, object]:
    from deepspeed.utils import safe_get_full_grad

    model_cfg = model_cfg or _small_model_cfg()
    trainer = TrainerConfig(
        output_dir=str(tmp_path),
        global_batch_size=2,
        micro_batch_size=2,
        seed=3,
        attn_implementation="sdpa",
        precision="bf16",
        kernels=kernels,
    )
    engine = materialised(tiny_plan(model_cfg, trainer, default_config("yarn", 2.0), 512)).engine
    head = engine.module.get_output_embeddings().weight
    persistent = head.ds_persist  # below stage3_param_persistence_threshold: never partitioned
    outputs = engine(**model_inputs(batch, "sdpa", torch.device("cuda")))
    engine.backward(outputs.loss)
    grads = {name: safe_get_full_grad(p).float().cpu() for name, p in engine.module.named_parameters()}
    loss, logits = outputs.loss.item(), outputs.logits
    grads["lm_head persistent"] = persistent
    del engine, outputs, head
    gc.collect()
    torch.cuda.empty_cache()
    return loss, grads, logits


def _compare(grads_liger: dict, grads_none: dict) -> None:
    assert grads_liger.keys() == grads_none.keys()
    for name, reference in grads_none.items():
        if isinstance(reference, bool):
            continue
        error = (grads_liger[name] - reference).norm() / reference.norm().clamp_min(1e-12)
        assert error < 5e-2, (name, float(error))


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="needs liger-kernel")
def test_liger_kernels_match_plain_hf_within_bf16_tolerance(tmp_path):
    batch = _batch(2, 512)
    loss_none, grads_none, logits_none = _loss_and_grads("none", batch, tmp_path / "none")
    loss_liger, grads_liger, logits_liger = _loss_and_grads("liger", batch, tmp_path / "liger")
    assert logits_none is not None and logits_liger is None  # the fused loss never builds the logits
    assert math.isclose(loss_liger, loss_none, rel_tol=1e-2)
    _compare(grads_liger, grads_none)


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="needs liger-kernel")
def test_liger_under_zero3_with_a_partitioned_lm_head(tmp_path, monkeypatch):
    """A 32000 x 256 lm_head is above ZeRO-3's persistence threshold (1e5 elements), so it is
    partitioned between forwards: the fused loss must still read it whole (registered as an
    external parameter of the model) and accumulate its gradient in float32."""
    from liger_kernel.transformers import functional

    fused = functional.liger_fused_linear_cross_entropy
    accum_dtypes = []

    def spy(*args, **kwargs):
        accum_dtypes.append(kwargs.get("accum_dtype"))
        return fused(*args, **kwargs)

    monkeypatch.setattr(functional, "liger_fused_linear_cross_entropy", spy)
    model_cfg = _small_model_cfg(vocab_size=32000)
    batch = _batch(2, 512, vocab=32000)
    loss_none, grads_none, _ = _loss_and_grads("none", batch, tmp_path / "none", model_cfg)
    loss_liger, grads_liger, _ = _loss_and_grads("liger", batch, tmp_path / "liger", model_cfg)
    assert grads_liger["lm_head persistent"] is False and grads_none["lm_head persistent"] is False
    assert accum_dtypes == [torch.float32]
    assert math.isclose(loss_liger, loss_none, rel_tol=1e-2)
    _compare(grads_liger, grads_none)
    assert grads_liger["lm_head.weight"].norm() > 0


def test_peak_memory_is_the_peak_since_the_last_reset():
    from dprope.train.metrics import peak_memory_gib

    peak_memory_gib(reset=True)
    block = torch.empty(2**28, dtype=torch.uint8, device="cuda")  # 256 MiB
    del block
    assert peak_memory_gib(reset=True) - peak_memory_gib(reset=True) >= 0.25


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="needs flash-attn")
@pytest.mark.parametrize("rows", [1, 2])
def test_flash_varlen_segments_give_the_plain_flash_loss(rows):
    model_cfg = _small_model_cfg()
    hf_config, _ = model_hf_config(model_cfg, default_config("pi", 2.0))
    model = build_model(model_cfg, hf_config, "bf16", "flash_attention_2", seed=0).cuda()
    batch = _batch(rows, 512)
    device = torch.device("cuda")
    with torch.no_grad():
        varlen = model(**model_inputs(batch, "flash_attention_2", device)).loss.item()
        plain = model(input_ids=batch["input_ids"].to(device), labels=batch["labels"].to(device)).loss.item()
        sdpa_model = build_model(model_cfg, hf_config, "bf16", "sdpa", seed=0).cuda()
        sdpa = sdpa_model(
            input_ids=batch["input_ids"].to(device), labels=batch["labels"].to(device)
        ).loss.item()
    assert math.isclose(varlen, plain, rel_tol=1e-3)
    assert math.isclose(varlen, sdpa, rel_tol=1e-2)


def test_export_loads_back_on_the_gpu(tmp_path, data_cache):
    from transformers import AutoModelForCausalLM

    result = run_train(small_run(tmp_path, data_cache, "trainer.steps=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    export = tmp_path / "hf"
    on_gpu = AutoModelForCausalLM.from_pretrained(export, dtype=torch.bfloat16).cuda().eval()
    on_cpu = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    assert on_gpu.config.rope_parameters["rope_type"] == "longrope"
    (rotary,) = rotary_modules(on_gpu)
    assert rotary.inv_freq.dtype == torch.float32
    (reference,) = rotary_modules(on_cpu)
    assert torch.equal(rotary.inv_freq.cpu(), reference.inv_freq)
    input_ids = _batch(1, 3 * 256)["input_ids"]  # beyond the original 256-token context
    with torch.no_grad():
        gpu_logits = on_gpu(input_ids.cuda()).logits.float().cpu()
        cpu_logits = on_cpu(input_ids).logits
    assert torch.isfinite(gpu_logits).all()
    error = (gpu_logits - cpu_logits).norm() / cpu_logits.norm()
    assert error < 5e-2, float(error)
