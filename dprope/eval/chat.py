"""Chat templates, one rule for every benchmark (``eval.chat_template``).

A chat or instruct model is usually evaluated on its own conversation format. With
``eval.chat_template=true`` every benchmark that prompts the model builds its prompt text as
before (cut to its budget where it has one) and then encodes it with `encode_prompt`: the text
becomes the single user turn of the tokenizer's chat template, followed by the template's
generation prompt (the assistant's turn), tokenized without adding special tokens again (the
template writes them). LongBench-E's official exception stays (its few-shot and code tasks are
never wrapped); perplexity scores whole documents, no prompt, and records that the template was
not applied; lm-eval's tasks get lm-eval's own ``apply_chat_template``. The setting is recorded in
``results.json`` (``settings.chat_template``, and the template's SHA-256 under ``model``).
"""

from __future__ import annotations

import hashlib

from dprope.config import ConfigError


def check_chat_template(tokenizer, enabled: bool, model_name: str) -> None:
    """``eval.chat_template`` needs a tokenizer that has one (before any weight loads)."""
    if enabled and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "eval.chat_template",
            f"the tokenizer of {model_name} has no chat template (set it false for a base model)",
        )


def template_sha256(tokenizer) -> str | None:
    """A fingerprint of the chat template the prompts were wrapped in, for the results."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str):
        return None
    return hashlib.sha256(template.encode()).hexdigest()


def chat_ids(tokenizer, text: str) -> list[int]:
    """``text`` as the user turn of the tokenizer's chat template, ready for the answer."""
    wrapped = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(wrapped, add_special_tokens=False)["input_ids"])


def encode_prompt(tokenizer, text: str, chat: bool) -> list[int]:
    """The token ids a benchmark sends for prompt ``text``: the tokenizer's own (BOS included) or,
    with ``chat``, the text wrapped in its chat template (`chat_ids`)."""
    if chat:
        return chat_ids(tokenizer, text)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])
