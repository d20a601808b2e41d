"""Document and anchor attention in the tiny model: a packed window computes every document as
if it were alone (document), or alone after the anchor at position 0 (anchor)."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from dprope.config import ConfigError
from dprope.data.segments import segment_bounds
from dprope.train.attention import ATTENTION_MODES, visible_pairs
from dprope.train.config import TrainerConfig

BOS = 1
CPU = torch.device("cpu")


def tiny_model(tiny_model_cfg, implementation: str, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_model_cfg.hf_config()
    return AutoModelForCausalLM.from_config(config, attn_implementation=implementation, dtype=dtype).eval()


def packed_item(length: int, max_length: int, starts: list[int], seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 250, (max_length,), generator=generator)
    ids[starts] = BOS
    ids[length:] = 0
    return {"input_ids": ids, "doc_starts": torch.tensor(starts), "length": length}


def collate(items: list[dict], mode: str) -> dict:
    return ATTENTION_MODES[mode].collate(BOS)(items)


def model_inputs(batch: dict, mode: str, implementation: str, device=CPU, dtype=torch.float32) -> dict:
    return ATTENTION_MODES[mode].inputs(batch, implementation, device, dtype)


def alone(model, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Plain causal attention over one document, no packing."""
    return model(input_ids=ids[None], position_ids=positions[None]).logits[0]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_document_logits_equal_each_document_alone(tiny_model_cfg, implementation):
    model = tiny_model(tiny_model_cfg, implementation)
    items = [packed_item(48, 48, [5, 19, 30], seed=1), packed_item(48, 48, [0, 40], seed=2)]
    batch = collate(items, "document")
    with torch.no_grad():
        logits = model(**model_inputs(batch, "document", implementation)).logits
        causal = model(input_ids=batch["input_ids"]).logits
        for row, item in enumerate(items):
            bounds = segment_bounds(item["doc_starts"], 48, 48)
            for begin, end in pairwise(bounds):
                ids = item["input_ids"][begin:end]
                expected = alone(model, ids, torch.arange(end - begin))
                torch.testing.assert_close(logits[row, begin:end], expected, rtol=0, atol=2e-5)
    # the second document of row 0 differs from what full causal attention computes
    assert (causal[0, 19:30] - logits[0, 19:30]).abs().max() > 1e-3


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_anchor_logits_equal_each_document_alone_after_the_anchor(tiny_model_cfg, implementation):
    model = tiny_model(tiny_model_cfg, implementation)
    item = packed_item(48, 48, [6, 20, 33], seed=3)  # begins inside a document
    batch = collate([item], "anchor")
    with torch.no_grad():
        logits = model(**model_inputs(batch, "anchor", implementation)).logits[0]
        for begin, end in pairwise([0, 6, 20, 33, 48]):
            # the anchor (BOS at position 0), then the document's own tokens at their window positions
            ids = torch.cat([torch.tensor([BOS]), item["input_ids"][begin + 1 : end]])
            positions = torch.cat([torch.tensor([0]), torch.arange(begin + 1, end)])
            torch.testing.assert_close(logits[begin:end], alone(model, ids, positions), rtol=0, atol=2e-5)
        # positions do not restart: the same tokens at document positions give other logits
        ids = item["input_ids"][20:33]
        assert (alone(model, ids, torch.arange(13)) - logits[20:33]).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["document", "anchor"])
def test_padded_tail_has_the_loss_of_the_unpadded_window(tiny_model_cfg, mode):
    model = tiny_model(tiny_model_cfg, "sdpa")
    full = packed_item(40, 40, [0, 12, 25], seed=4)
    padded = {
        "input_ids": torch.cat([full["input_ids"], torch.zeros(24, dtype=torch.long)]),
        "doc_starts": full["doc_starts"],
        "length": 40,
    }
    with torch.no_grad():
        losses = [model(**model_inputs(collate([x], mode), mode, "sdpa")).loss for x in (full, padded)]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=0)


def test_visible_pairs_count_each_segment_triangle():
    segments = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    assert visible_pairs(segments) == (6 + 3) + 15


def test_kernel_is_named():
    assert ATTENTION_MODES["anchor"].describe("flash_attention_2").startswith("anchor: flash-attn varlen")
    assert ATTENTION_MODES["causal"].describe("sdpa") == "sdpa (causal over the window)"
    with pytest.raises(ValueError, match="no document mask for attention implementation 'paged'"):
        ATTENTION_MODES["document"].describe("paged")


def test_modes_declare_their_needs_and_the_config_takes_exactly_the_registry():
    from dprope.data.config import ANCHORCONTEXT, STANDARD

    declared = {
        name: (m.needs_bos, m.sequence_parallel, m.masked, m.packing) for name, m in ATTENTION_MODES.items()
    }
    assert declared == {
        "causal": (False, True, False, STANDARD),
        "document": (True, True, True, STANDARD),
        "anchor": (True, True, True, ANCHORCONTEXT),
    }
    assert all(mode.name == name for name, mode in ATTENTION_MODES.items())
    for name in ATTENTION_MODES:
        assert TrainerConfig(attention=name).attention == name
    with pytest.raises(ConfigError, match="must be one of causal, document, anchor"):
        TrainerConfig(attention="sliding")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU choice")
def test_auto_kernel_is_the_modes_choice_without_flash_attn():
    from dprope.train.attention import resolve_implementation

    assert {name: resolve_implementation("auto", m) for name, m in ATTENTION_MODES.items()} == {
        "causal": "sdpa",
        "document": "sdpa",
        "anchor": "sdpa",
    }
    assert ATTENTION_MODES["anchor"].auto_implementation(cuda=True) == "flex_attention"
    assert ATTENTION_MODES["causal"].auto_implementation(cuda=True) == "sdpa"
    assert resolve_implementation("eager", ATTENTION_MODES["causal"]) == "eager"
    with pytest.raises(ConfigError, match="trainer.attn_implementation: flash_attention_2 needs flash-attn"):
        resolve_implementation("flash_attention_2", ATTENTION_MODES["causal"])


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["flash_attention_2", "flex_attention"])
@pytest.mark.parametrize("mode", ["document", "anchor"])
def test_gpu_kernels_match_the_explicit_mask(tiny_model_cfg, implementation, mode):
    if implementation == "flash_attention_2":
        pytest.importorskip("flash_attn")
    device = torch.device("cuda")
    reference = tiny_model(tiny_model_cfg, "sdpa", torch.bfloat16).to(device)
    model = tiny_model(tiny_model_cfg, implementation, torch.bfloat16).to(device)
    items = [packed_item(256, 256, [17, 90, 200], seed=5), packed_item(256, 256, [0, 128], seed=6)]
    batch = collate(items, mode)
    with torch.no_grad():
        expected = reference(**model_inputs(batch, mode, "sdpa", device)).logits
        logits = model(**model_inputs(batch, mode, implementation, device)).logits
    torch.testing.assert_close(logits.float(), expected.float(), rtol=0, atol=5e-2)
