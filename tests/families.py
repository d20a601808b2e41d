"""The model families' presets, their published configs, and tiny models of the same architecture.

Nothing can be downloaded here, so each family preset is checked against its published
``config.json`` transcribed below (the keys that matter, as the hub serves them, legacy
``rope_scaling`` format included) and trained as a tiny random model of the same architecture:
the preset with every size shrunk (2 layers, hidden 64, 4 query heads of 16, 1 key/value head
where the preset has GQA, L = 256) and its own rope type kept (Llama-3.1's llama3 rule, from 64
positions).
"""

from __future__ import annotations

from typing import Any

FAMILY_PRESETS = ("llama3_8b", "llama3_1_8b", "qwen2_5_7b", "mistral_7b_v0_3")

# The published config.json of each preset's checkpoint (the keys the trainer reads).
PUBLISHED: dict[str, dict[str, Any]] = {
    # https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json
    "llama3_8b": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "rope_scaling": None,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "vocab_size": 128256,
    },
    # https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json
    "llama3_1_8b": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "vocab_size": 128256,
    },
    # https://huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json
    "qwen2_5_7b": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_attention_heads": 28,
        "num_hidden_layers": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 131072,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "use_sliding_window": False,
        "tie_word_embeddings": False,
        "vocab_size": 152064,
    },
    # https://huggingface.co/mistralai/Mistral-7B-v0.3/blob/main/config.json
    "mistral_7b_v0_3": {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "vocab_size": 32768,
    },
}


def preset_model(preset: str, overrides: list[str] | tuple[str, ...] = ()):
    """The typed `ModelConfig` of ``model=<preset>`` with ``overrides`` (``model.<key>=...``)."""
    from dprope.cli import compose_config
    from dprope.config import to_typed

    cfg = compose_config("analyze", [f"model={preset}", *overrides])
    return to_typed(cfg.model, "model")


def tiny_model_overrides(preset: str) -> list[str]:
    """``model.*`` overrides that shrink ``model=<preset>`` to a tiny random model of its family
    and rope type (byte tokenizer, no weights)."""
    full = preset_model(preset)
    gqa = (full.num_key_value_heads or full.num_attention_heads) < full.num_attention_heads
    overrides = [
        "model.pretrained=null",
        "model.tokenizer=byte",
        f"model.name=tiny-{full.name}",
        "model.hidden_size=64",
        "model.head_dim=16",
        "model.num_attention_heads=4",
        f"model.num_key_value_heads={1 if gqa else 4}",
        "model.num_hidden_layers=2",
        "model.intermediate_size=128",
        "model.vocab_size=260",
        "model.original_max_position_embeddings=256",
        "model.max_position_embeddings=null",
    ]
    if "original_max_position_embeddings" in full.rope_scaling:  # llama3: its ramp starts at 64 positions
        overrides.append("model.rope_scaling.original_max_position_embeddings=64")
    return overrides


def tiny_model(preset: str):
    return preset_model(preset, tiny_model_overrides(preset))
