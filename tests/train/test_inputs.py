"""The collate function's segment offsets reach the model's attention call through the real
DeepSpeed engine, with gradient checkpointing, in every layer."""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from dprope.data import collate_packed
from dprope.train.attention import ATTENTION_MODES
from dprope.train.config import TrainerConfig
from dprope.train.stepper import Stepper
from tests.train.conftest import materialised, tiny_plan

RECORDED = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def test_model_inputs_pass_the_collated_segments():
    items = [{"input_ids": torch.arange(6), "doc_starts": torch.tensor([0])} for _ in range(2)]
    batch = collate_packed(items)
    inputs = ATTENTION_MODES["causal"].inputs(batch, "sdpa", torch.device("cpu"))
    assert (
        inputs["cu_seq_lens_q"].tolist() == [0, 6, 12] and inputs["cu_seq_lens_k"] is inputs["cu_seq_lens_q"]
    )
    assert inputs["max_length_q"] == inputs["max_length_k"] == 6
    assert torch.equal(inputs["position_ids"], batch["position_ids"])
    assert "doc_starts" not in inputs and "cu_seqlens" not in inputs  # not forward arguments


def test_segments_reach_every_attention_call(tiny_model_cfg, tmp_path):
    calls = []

    def recording_attention(module, query, key, value, attention_mask, **kwargs):
        calls.append({name: kwargs.get(name) for name in RECORDED})
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("dprope_recording", recording_attention)
    trainer = TrainerConfig(output_dir=str(tmp_path), global_batch_size=2, micro_batch_size=2)
    # the planned attention, replaced by the recording one registered above
    built = materialised(tiny_plan(tiny_model_cfg, trainer, implementation="dprope_recording"))
    length = 32
    generator = torch.Generator().manual_seed(0)
    items = [
        {"input_ids": torch.randint(4, 260, (length,), generator=generator), "doc_starts": torch.tensor([0])}
        for _ in range(2)
    ]
    stepper = Stepper(built.engine, built.micro_step, iter([collate_packed(items)]), 1, torch.device("cpu"))
    result = stepper.step()
    assert result.finite
    # forward, then the checkpointed recomputation in backward: every layer, every time
    assert len(calls) == 2 * tiny_model_cfg.num_hidden_layers
    for call in calls:
        assert call["cu_seq_lens_q"].tolist() == [0, length, 2 * length]
        assert call["cu_seq_lens_q"].dtype == torch.int32
        assert torch.equal(call["cu_seq_lens_k"], call["cu_seq_lens_q"])
        assert call["max_length_q"] == call["max_length_k"] == length
        assert isinstance(call["max_length_q"], int)  # a GPU tensor here would be read back per layer
