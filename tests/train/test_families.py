"""Each model family trains on CPU with ZeRO-3 from a random init of its architecture (a tiny
Llama with Llama-3.1's llama3 rope, a tiny Qwen2 with its q/k/v bias, a tiny Mistral), resumes
exactly, and exports a model vanilla transformers loads with the trained model's logits; Liger's
per-family entry points; bad checkpoints refused in one line before any weight loads."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from omegaconf import OmegaConf

from dprope.cli import compose_config
from dprope.config import ConfigError
from dprope.model import FAMILIES, Family
from dprope.train.config import EXIT_PREEMPTED, RunConfig
from dprope.train.liger import resolve_kernels
from dprope.train.loop import train
from tests.families import tiny_model_overrides
from tests.train.conftest import (
    ROOT,
    assert_one_line_error,
    launch,
    materialised,
    read_metrics,
    run_train,
    small_run,
)

TRAINED = ("llama3_1_8b", "qwen2_5_7b", "mistral_7b_v0_3")
STEPS = 6


def family_overrides(preset: str, output_dir, data_cache, *extra: str) -> list[str]:
    """A small real run (DPRoPE s=4, 256-token sequences, ZeRO-3) of a tiny model of ``preset``'s
    family and rope type."""
    return [f"model={preset}", *tiny_model_overrides(preset), *small_run(output_dir, data_cache, *extra)]


@pytest.mark.parametrize(
    "preset",
    # the fast tier trains the family with an already-scaled RoPE; the other two in the slow tier
    [pytest.param(p, marks=() if p == "llama3_1_8b" else pytest.mark.slow) for p in TRAINED],
)
def test_family_trains_with_zero3_and_exports_the_trained_logits(preset, tmp_path, data_cache):
    from transformers import AutoModelForCausalLM

    from dprope.train import checkpoint
    from dprope.train.plan import plan_run

    cfg = compose_config("train", family_overrides(preset, tmp_path, data_cache, "trainer.steps=2"))
    run = RunConfig.from_config(cfg)
    assert run.trainer.zero_stage == 3 and run.model.pretrained is None
    assert train(run, OmegaConf.to_container(cfg, resolve=True)) == 0
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2] and all(r["loss"] > 0 for r in records)

    export = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")  # vanilla transformers
    assert export.config.model_type == run.model.family
    assert export.config.rope_parameters["rope_type"] == "longrope"
    if preset == "qwen2_5_7b":
        assert export.model.layers[0].self_attn.q_proj.bias is not None
    assert export.config.num_key_value_heads == 1

    plan = plan_run(run, world_size=1)
    engine = materialised(plan).engine
    state = checkpoint.load(engine, checkpoint.latest_checkpoint(checkpoint.checkpoint_root(tmp_path)))
    assert state.step == 2
    torch.testing.assert_close(export.model.rotary_emb.inv_freq, plan.scaling.inv_freq, rtol=0, atol=0)
    input_ids = torch.randint(3, 260, (1, 700), generator=torch.Generator().manual_seed(0))  # beyond L = 256
    engine.eval()
    export.eval()
    with torch.no_grad():
        trained = engine(input_ids=input_ids).logits
        exported = export(input_ids=input_ids).logits
    torch.testing.assert_close(exported, trained, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("preset", TRAINED)
def test_family_resumes_exactly_after_sigterm(preset, tmp_path, data_cache):
    reference = tmp_path / "reference"
    result = run_train(family_overrides(preset, reference, data_cache, f"trainer.steps={STEPS}"))
    assert result.returncode == 0, result.stderr[-3000:]

    stopped = tmp_path / "stopped"
    overrides = family_overrides(
        preset, stopped, data_cache, f"trainer.steps={STEPS}", "trainer.save_every=0"
    )
    process = launch(overrides)
    while len(read_metrics(stopped)) < 2:
        assert process.poll() is None, process.stderr.read()[-3000:]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == EXIT_PREEMPTED, stderr[-3000:]
    assert len(read_metrics(stopped)) < STEPS
    resumed = run_train(overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["loss"] for r in read_metrics(stopped)] == [r["loss"] for r in read_metrics(reference)]


def test_random_init_builds_each_family():
    from transformers import AutoModelForCausalLM

    from tests.families import FAMILY_PRESETS, tiny_model

    built = {}
    for preset in FAMILY_PRESETS:
        model_cfg = tiny_model(preset)
        model = AutoModelForCausalLM.from_config(model_cfg.hf_config())
        built[preset] = type(model).__name__
        assert model.config.num_key_value_heads == model_cfg.num_key_value_heads == 1
    assert built == {
        "llama3_8b": "LlamaForCausalLM",
        "llama3_1_8b": "LlamaForCausalLM",
        "qwen2_5_7b": "Qwen2ForCausalLM",
        "mistral_7b_v0_3": "MistralForCausalLM",
    }


# ---- Liger: each family's own entry point ----------------------------------------------------


def test_each_family_names_its_liger_entry_point():
    assert {name: family.liger for name, family in FAMILIES.items()} == {
        "llama": "apply_liger_kernel_to_llama",
        "mistral": "apply_liger_kernel_to_mistral",
        "qwen2": "apply_liger_kernel_to_qwen2",
    }
    liger = pytest.importorskip("liger_kernel.transformers")
    for family in FAMILIES.values():
        assert callable(getattr(liger, family.liger))


def test_a_family_without_liger_kernels_is_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(FAMILIES, "plainfamily", Family("LlamaConfig", None))
    with pytest.raises(ConfigError) as err:
        resolve_kernels("liger", "plainfamily")
    assert str(err.value) == (
        "trainer.kernels: liger has no kernels for model type 'plainfamily' "
        "(families with them: llama, mistral, qwen2); use none (or auto)"
    )
    assert resolve_kernels("auto", "plainfamily") == "none"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_liger_of_a_supported_family_needs_a_gpu(model_type):
    with pytest.raises(ConfigError, match="trainer.kernels: liger needs a CUDA GPU"):
        resolve_kernels("liger", model_type)


@pytest.mark.gpu
@pytest.mark.parametrize("preset", TRAINED)
def test_liger_entry_point_of_each_family_gives_the_plain_loss(preset):
    """On a GPU: the family's Liger kernels (fused linear cross-entropy, RMSNorm, SwiGLU) give
    the plain model's loss in float32."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("liger_kernel.transformers")
    from transformers import AutoModelForCausalLM

    from dprope.train.liger import apply_liger
    from tests.families import tiny_model

    config = tiny_model(preset).hf_config()
    torch.manual_seed(0)
    plain = AutoModelForCausalLM.from_config(config).cuda()
    fused = AutoModelForCausalLM.from_config(config).cuda()
    fused.load_state_dict(plain.state_dict())
    assert FAMILIES[config.model_type].liger in apply_liger(fused, zero_stage=0)
    input_ids = torch.randint(3, 260, (2, 128), device="cuda")
    expected = plain(input_ids=input_ids, labels=input_ids).loss
    torch.testing.assert_close(
        fused(input_ids=input_ids, labels=input_ids).loss, expected, rtol=1e-4, atol=1e-4
    )


# ---- bad checkpoints: one line before any weight loads --------------------------------------


def test_a_checkpoint_without_rotary_embedding_fails_in_one_line(tmp_path, data_cache):
    from transformers import GPT2Config

    GPT2Config(n_layer=1).save_pretrained(tmp_path / "gpt2")  # a config, no weights
    result = run_train(
        [
            *small_run(tmp_path / "run", data_cache),
            f"model.pretrained={tmp_path / 'gpt2'}",
            "model.tokenizer=byte",
        ],
        timeout=120,
    )
    assert_one_line_error(result, "model.pretrained")
    assert (
        "(gpt2) has no rotary position embedding; supported families: llama, mistral, qwen2" in result.stderr
    )
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_analyze_prints_a_family_table(tmp_path):
    import subprocess
    import sys

    from tests.train.conftest import train_env

    done = subprocess.run(
        [
            sys.executable,
            "launch/analyze.py",
            "model=qwen2_5_7b",
            "analysis.figures=false",
            f"analysis.output_dir={tmp_path}",
        ],
        cwd=ROOT,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "Rotary-angle disturbance: qwen2.5-7b (head_dim 128, base 1e+06, L 32768) -> 65536 (s=2)"
        in done.stdout
    )
    for line in ("pi ", "yarn ", "dprope *"):
        assert any(row.startswith(line) for row in done.stdout.splitlines()), line
    assert json.loads((tmp_path / "analysis.json").read_text())["model"]["family"] == "qwen2"
