"""eval.rope_precision: the loaded model rotates in the chosen precision; bad values name the field."""

from __future__ import annotations

import pytest
import torch

from dprope.config import ConfigError


def test_fp32_rotation_is_applied_when_loading(tiny_eval_model):
    from dprope.eval.loading import load_model, resolve_checkpoint

    checkpoint = resolve_checkpoint(tiny_eval_model)
    ids = torch.randint(3, 250, (1, 8))
    for precision, patched in (("model", False), ("fp32", True)):
        model = load_model(checkpoint, "cpu", precision)
        rotary = model.model.rotary_emb
        assert (getattr(rotary.forward, "dprope_rope_precision", None) == "fp32") is patched
        cos, _ = rotary(model.model.embed_tokens(ids).bfloat16(), torch.arange(8)[None])
        assert cos.dtype == (torch.float32 if patched else torch.bfloat16)


def test_unknown_rope_precision_names_the_field():
    from dprope.eval.suite import eval_config

    with pytest.raises(ConfigError, match=r"^eval\.rope_precision: must be one of model, fp32"):
        eval_config({"rope_precision": "bf16"})
