"""dprope: extend the context window of RoPE LLMs by fine-tuning with PI, YaRN or DPRoPE."""

__version__ = "0.1.0"
