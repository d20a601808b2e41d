"""Retrieval accuracy: exact match of the key, over a depth x length grid of passkey prompts.

A prompt is correct when greedy decoding after the cue produces exactly the key's tokens. That
needs no generation loop: with the prompt and the key in one forward pass, the key comes out of
greedy decoding exactly when the argmax at each answer position is the key's next token (while
every earlier answer token is right, the decoded prefix is the teacher-forced one; at the first
wrong argmax, greedy decoding goes wrong too). One batched forward pass per batch of prompts.

Prompts of a batch are right-padded: causal attention keeps the padding out of every real
position, so each prompt is scored as it would be alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dprope.reproduce.synthetic import PromptBuilder, RetrievalPrompt


@torch.inference_mode()
def exact_matches(
    model, prompts: Sequence[RetrievalPrompt], batch_size: int = 8, pad_id: int = 0
) -> list[bool]:
    """Whether greedy decoding reproduces each prompt's answer (see the module docstring)."""
    device = next(model.parameters()).device
    correct = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        width = max(len(p.input_ids) for p in chunk)
        batch = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for row, prompt in enumerate(chunk):
            batch[row, : len(prompt.input_ids)] = torch.tensor(prompt.input_ids)
        logits = model(input_ids=batch.to(device), use_cache=False).logits  # (B, T, V)
        predicted = logits.argmax(-1).cpu()  # position t predicts token t + 1
        for row, prompt in enumerate(chunk):
            n, k = len(prompt.input_ids), prompt.answer_tokens
            guesses = predicted[row, n - k - 1 : n - 1]
            correct.append(bool(torch.equal(guesses, batch[row, n - k : n])))
    return correct


def accuracy_grid(prompts: Sequence[RetrievalPrompt], correct: Sequence[bool]) -> dict[str, dict[str, float]]:
    """``{length: {depth: share correct}}`` (string keys, JSON's)."""
    cells: dict[tuple[int, float], list[bool]] = {}
    for prompt, ok in zip(prompts, correct, strict=True):
        cells.setdefault((prompt.length, prompt.depth), []).append(ok)
    grid: dict[str, dict[str, float]] = {}
    for (length, depth), values in cells.items():
        grid.setdefault(str(length), {})[f"{depth:g}"] = sum(values) / len(values)
    return grid


def retrieval(
    model,
    tokenizer,
    key_length: int,
    lengths: Sequence[int],
    depths: Sequence[float],
    trials: int,
    seed: int,
    batch_size: int = 8,
) -> dict[str, Any]:
    """The depth x length grid of exact-match accuracy and its mean over depths per length."""
    prompts = PromptBuilder(tokenizer, key_length).grid(list(lengths), list(depths), trials, seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    grid = accuracy_grid(prompts, exact_matches(model, prompts, batch_size, pad))
    return {
        "grid": grid,
        "accuracy": {n: sum(row.values()) / len(row) for n, row in grid.items()},
        "trials": trials,
        "depths": [float(d) for d in depths],
    }
