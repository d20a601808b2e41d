"""Model transforms: in order, logged in one line, and on the model instance only: a model built
after a transformed one in the same process is plain transformers, and the float32 rotation
computes what the former module-wide patch of `apply_rotary_pos_emb` computed."""

from __future__ import annotations

import copy
import logging
import types

import pytest
import torch
from transformers import LlamaForCausalLM
from transformers.models.llama import modeling_llama

from dprope.rope.rotation import apply_rope_precision, rotate_in_float32
from dprope.train.config import TrainerConfig
from dprope.train.transforms import BEFORE_WRAP, ModelParts, apply_transforms
from tests.train.conftest import materialised, tiny_plan

IDS = torch.randint(3, 250, (2, 96), generator=torch.Generator().manual_seed(1))


def bf16_model(tiny_model_cfg) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = tiny_model_cfg.hf_config()
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).to(torch.bfloat16).eval()


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, position_ids=torch.arange(200, 200 + ids.shape[1]).expand_as(ids)).logits


def module_wide_fp32_rotation(model, monkeypatch) -> None:
    """What `apply_rope_precision(model, "fp32")` did before it was instance-scoped: the modelling
    module's `apply_rotary_pos_emb` replaced for the whole process, the rotary forward wrapped."""
    monkeypatch.setattr(modeling_llama, "apply_rotary_pos_emb", rotate_in_float32)
    for rotary in (m for m in model.modules() if hasattr(m, "inv_freq")):
        original = rotary.forward

        def forward(x, position_ids, original=original):
            return original(torch.empty(0, dtype=torch.float32, device=x.device), position_ids)

        rotary.forward = forward


def library_state():
    """Every name of the Llama modelling module and of its classes, and transformers' attention
    registry: what a process-wide patch would change."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    classes = [v for v in vars(modeling_llama).values() if isinstance(v, type)]
    return (
        dict(vars(modeling_llama)),
        {cls: dict(vars(cls)) for cls in classes},
        {key: ALL_ATTENTION_FUNCTIONS[key] for key in ALL_ATTENTION_FUNCTIONS},
    )


def assert_same_library(before) -> None:
    after = library_state()
    for old, new in zip(before, after, strict=True):
        assert old.keys() == new.keys()
        for key, value in old.items():
            if isinstance(value, dict):
                assert all(new[key].get(k) is v for k, v in value.items()), key
            else:
                assert new[key] is value, key


def assert_plain(model) -> None:
    """No instance of ``model`` carries a forward of its own."""
    patched = [type(m).__name__ for m in model.modules() if "forward" in vars(m)]
    assert patched == []


def test_fp32_rotation_stays_on_its_instance_with_the_numbers_of_the_module_wide_patch(
    tiny_model_cfg, monkeypatch
):
    before = library_state()
    model = bf16_model(tiny_model_cfg)
    reference = copy.deepcopy(model)  # the same weights, for the former patch
    plain = logits(model)
    assert apply_rope_precision(model, "fp32") == 1
    assert_same_library(before)  # nothing of transformers changed for the process

    # a model built afterwards attends and rotates as transformers does
    later = bf16_model(tiny_model_cfg)
    assert_plain(later)
    assert torch.equal(logits(later), plain)
    attention = later.model.layers[0].self_attn
    assert attention.forward.__func__ is modeling_llama.LlamaAttention.forward

    # the transformed one rotates in float32, exactly as the module-wide patch did
    fp32 = logits(model)
    assert not torch.equal(fp32, plain)
    module_wide_fp32_rotation(reference, monkeypatch)
    assert torch.equal(fp32, logits(reference))


def test_a_copy_of_a_transformed_model_keeps_its_rotation_on_itself(tiny_model_cfg):
    model = bf16_model(tiny_model_cfg)
    apply_rope_precision(model, "fp32")
    twin = copy.deepcopy(model)
    assert torch.equal(logits(twin), logits(model))
    # the copy's forwards are bound to the copy, not to the original's modules
    for module in twin.modules():
        forward = vars(module).get("forward")
        if forward is not None:
            assert isinstance(forward, types.MethodType) and forward.__self__ is module


def test_every_transform_before_the_wrap_changes_the_instance_only(tiny_model_cfg):
    trainer = TrainerConfig(rope_precision="fp32", gradient_checkpointing=True, tiled_compute=True)
    plan = tiny_plan(tiny_model_cfg, trainer)
    before = library_state()
    model = bf16_model(tiny_model_cfg)
    done = apply_transforms(model, plan.transforms, BEFORE_WRAP, ModelParts())
    assert done == [
        "rotation in float32 (1 rotary module(s))",
        "activation checkpointing",
        "tiled MLP in 2 module(s)",
    ]
    assert_same_library(before)
    assert_plain(bf16_model(tiny_model_cfg))


def test_transforms_run_in_order_around_the_wrap_and_are_logged_in_one_line(tiny_model_cfg, caplog):
    trainer = TrainerConfig(
        global_batch_size=2,
        micro_batch_size=2,
        rope_precision="fp32",
        tiled_compute=True,
        output_dir="unused",
    )
    plan = tiny_plan(tiny_model_cfg, trainer)
    assert [type(t).__name__ for t in plan.transforms] == [
        "RopePrecision",
        "ActivationCheckpointing",
        "TiledMLP",
        "FinalHiddenCapture",
        "RotaryFrequencies",
    ]
    with caplog.at_level(logging.INFO, logger="dprope.train.engine"):
        built = materialised(plan)
    line = (
        "model transforms: rotation in float32 (1 rotary module(s)) -> activation checkpointing -> "
        "tiled MLP in 2 module(s) -> DeepSpeed wrap -> final hidden states captured -> "
        "rotary frequencies restored in float32 in 1 module(s)"
    )
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("model transforms")] == [line]
    assert built.parts.final_hidden == [] and built.micro_step.final_hidden is built.parts.final_hidden
    # the plan keeps no state of a materialisation: a second one gets parts of its own
    again = materialised(plan)
    assert again.parts.final_hidden is not built.parts.final_hidden


def test_unknown_rope_precision_and_a_model_without_rotation_are_refused():
    with pytest.raises(ValueError, match="rope precision"):
        apply_rope_precision(torch.nn.Linear(2, 2), "bf16")
    with pytest.raises(ValueError, match="no transformers apply_rotary_pos_emb"):
        apply_rope_precision(torch.nn.Sequential(torch.nn.Linear(2, 2)), "fp32")


def test_overrides_of_one_instance_compose(tiny_model_cfg):
    """The float32 rotation and a second override (as Ulysses adds one) both hold on the instance."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import AttentionInterface

    from dprope.instance_patch import global_overrides, override_globals

    model = bf16_model(tiny_model_cfg)
    apply_rope_precision(model, "fp32")
    fp32 = logits(model)
    calls = []

    def recording(*args, **kwargs):
        calls.append(1)
        return sdpa_attention_forward(*args, **kwargs)

    own = AttentionInterface()
    own["sdpa"] = recording
    routed = [m for m in model.modules() if override_globals(m, {"ALL_ATTENTION_FUNCTIONS": own})]
    assert len(routed) == tiny_model_cfg.num_hidden_layers
    assert set(global_overrides(routed[0])) == {"apply_rotary_pos_emb", "ALL_ATTENTION_FUNCTIONS"}
    assert torch.equal(logits(model), fp32) and len(calls) == tiny_model_cfg.num_hidden_layers
    # an instance forward set by someone else is not silently replaced
    foreign = bf16_model(tiny_model_cfg).model.layers[0].self_attn
    foreign.forward = lambda *args, **kwargs: None
    with pytest.raises(ValueError, match="already has an instance forward of another origin"):
        override_globals(foreign, {"apply_rotary_pos_emb": rotate_in_float32})
