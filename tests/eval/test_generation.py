"""Batched greedy decoding equals one prompt at a time (left padding, attention mask, stops)."""

from __future__ import annotations

import torch

from dprope.eval.generation import greedy_generate


def test_batched_generation_equals_one_at_a_time(tiny_model_dir, byte_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 260, (n,), generator=generator).tolist() for n in (5, 40, 17, 64, 33, 9)]
    prompts = [[byte_tokenizer.bos_token_id, *p] for p in prompts]
    newline = byte_tokenizer("\n", add_special_tokens=False)["input_ids"]
    for stops in ((), newline):
        one = greedy_generate(
            model, byte_tokenizer, prompts, 12, batch_size=1, stop_token_ids=stops, progress=False
        )
        many = greedy_generate(
            model, byte_tokenizer, prompts, 12, batch_size=4, stop_token_ids=stops, progress=False
        )
        assert many == one
        assert any(len(text) > 0 for text in one)  # something was generated
