"""How the benchmarks query the loaded model, in one place a caller can replace.

`Backends` holds greedy generation (passkey, RULER, LongBench-E) and the lm-eval model wrapped
around the checkpoint (lm-eval tasks). `run_suite` uses the defaults below; a test hands it
controlled ones (answers whose right score it knows) to check a benchmark's whole path, from its
prompts to its score grid, without replacing its scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dprope.eval.generation import greedy_generate


def huggingface_lm(model, tokenizer, batch_size: int, max_length: int):
    """lm-eval's ``HFLM`` around the already loaded model and tokenizer."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)


@dataclass(frozen=True)
class Backends:
    # (model, tokenizer, prompts as token ids, max_new_tokens, *, batch_size, stop_token_ids,
    # min_new_tokens, desc, progress) -> one answer per prompt, in order (`greedy_generate`)
    generate: Callable[..., list[str]] = greedy_generate
    # (model, tokenizer, batch_size, max_length) -> an lm-eval `LM`
    lm_eval_model: Callable[[Any, Any, int, int], Any] = huggingface_lm
