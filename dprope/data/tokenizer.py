"""Tokenizers: a model's own (hub id or local directory) or the built-in byte-level one.

The built-in tokenizer (name ``byte``) needs no download and no training: 4 special tokens then
the 256 bytes, so any text round-trips exactly. It stands in for a real tokenizer with tiny
models (tests, ``make demo``) and is saved next to an exported tiny model like any other.
"""

from __future__ import annotations

from pathlib import Path

from dprope.config import ConfigError

BYTE_TOKENIZER = "byte"
BYTE_SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
BYTE_VOCAB_SIZE = len(BYTE_SPECIAL_TOKENS) + 256


def byte_tokenizer():
    """A `PreTrainedTokenizerFast` over bytes; like LLaMA's, it prepends ``<s>`` by default."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # 256 printable stand-ins for the bytes
    vocab = {tok: i for i, tok in enumerate(BYTE_SPECIAL_TOKENS)}
    vocab.update({ch: len(BYTE_SPECIAL_TOKENS) + i for i, ch in enumerate(sorted(alphabet))})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def load_tokenizer(name_or_path: str, field: str = "model.tokenizer"):
    """The built-in byte tokenizer, or `AutoTokenizer` from a local directory or hub id.

    A local-looking path that does not exist is refused with a `ConfigError` naming ``field``
    before anything is downloaded.
    """
    if name_or_path == BYTE_TOKENIZER:
        return byte_tokenizer()
    from transformers import AutoTokenizer

    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise ConfigError(field, f"no tokenizer directory at {name_or_path}")
    try:
        return AutoTokenizer.from_pretrained(str(path) if looks_local else name_or_path)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(field, f"cannot load tokenizer {name_or_path!r}: {first_line}") from None
