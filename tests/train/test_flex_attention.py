"""FlexAttention on the CPU: the document and anchor block masks give the logits of SDPA with the
explicit mask, and the block mask is built compiled, in O(blocks) memory."""

from __future__ import annotations

import pytest
import torch

from scripts.bench_block_mask import run_child
from tests.train.test_attention import collate, model_inputs, packed_item, tiny_model

pytestmark = pytest.mark.slow  # FlexAttention and its mask compile for tens of seconds on a CPU


@pytest.mark.parametrize("mode", ["document", "anchor"])
def test_flex_logits_equal_the_explicit_mask(tiny_model_cfg, mode):
    reference = tiny_model(tiny_model_cfg, "sdpa")
    flex = tiny_model(tiny_model_cfg, "flex_attention")
    items = [packed_item(256, 256, [17, 90, 200], seed=5), packed_item(200, 256, [0, 128], seed=6)]
    batch = collate(items, mode)
    with torch.no_grad():
        expected = reference(**model_inputs(batch, mode, "sdpa")).logits
        logits = flex(**model_inputs(batch, mode, "flex_attention")).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    # the masks matter: plain causal attention over the window gives other logits
    with torch.no_grad():
        causal = reference(input_ids=batch["input_ids"]).logits
    assert (causal - expected).abs().max() > 1e-3


def test_the_block_mask_at_16k_costs_blocks_not_query_key_pairs():
    """Built eagerly, the mask of one 16k window first exists whole: 2.5 GiB measured here
    (about 10 bytes per query-key pair). Compiled, it must stay far below even the boolean
    (seq x seq) mask, 256 MiB."""
    row = run_child("compiled", 16384, doc_length=2048, timeout=900)
    assert "failed" not in row, row
    assert row["extra_peak_gib"] * 1024 < 64, row
    assert 0 < row["visible_blocks"] < row["blocks"] == (16384 // 128) ** 2
