"""Batched greedy decoding with the KV cache, shared by the generation benchmarks.

Prompts arrive as token ids (each benchmark controls its own truncation), are sorted by length
so a batch wastes little padding (longest first: an out-of-memory shows up at once), left-padded
and decoded greedily by `model.generate` with a fresh `GenerationConfig`, so sampling defaults
stored with a chat checkpoint never apply.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends an answer: the checkpoint's generation eos ids and the tokenizer's."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0


def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    batch_size: int = 1,
    stop_token_ids: Sequence[int] = (),
    min_new_tokens: int = 0,
    desc: str = "generate",
    progress: bool = True,
) -> list[str]:
    """Greedy continuations of ``prompts`` (token-id lists), decoded without special tokens,
    cut at the first end-of-sequence or ``stop_token_ids`` token; in the order of ``prompts``."""
    import torch
    from transformers import GenerationConfig

    stops = eos_token_ids(model, tokenizer) + list(stop_token_ids)
    pad = pad_token_id(tokenizer)
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        eos_token_id=stops or None,
        pad_token_id=pad,
        use_cache=True,
    )
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        width = max(len(prompts[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids = list(prompts[i])
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        with torch.inference_mode():
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=config,
            )
        for row, i in enumerate(batch):
            new_tokens = generated[row, width:].tolist()
            cut = next(
                (k for k, t in enumerate(new_tokens) if t in stops and k >= min_new_tokens), len(new_tokens)
            )
            outputs[i] = tokenizer.decode(new_tokens[:cut], skip_special_tokens=True)
    return outputs
