"""Tokenizers: a model's own (hub id or local directory) or the built-in byte-level one.

The built-in tokenizer (name ``byte``) needs no download and no training: 4 special tokens then
the 256 bytes, so any text round-trips exactly. It stands in for a real tokenizer with tiny
models (tests, ``make demo``) and is saved next to an exported tiny model like any other.
"""

from __future__ import annotations

import hashlib
import json

from dprope.config import ConfigError, first_line, local_path

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

    path = local_path(name_or_path)
    if path is not None and path.is_file():
        raise ConfigError(field, f"{name_or_path} is a file, not a tokenizer directory")
    if path is not None and not path.is_dir():
        raise ConfigError(field, f"no tokenizer directory at {name_or_path}")
    try:
        return AutoTokenizer.from_pretrained(str(path) if path is not None else name_or_path)
    except (
        Exception
    ) as err:  # OSError, ValueError, and the Rust parser's bare Exception on a damaged tokenizer.json
        raise ConfigError(field, f"cannot load tokenizer {name_or_path!r}: {first_line(err, True)}") from None


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of everything that decides a tokenizer's ids, for the data cache key.

    A fast tokenizer is its backend's JSON (normaliser, pre-tokeniser, model, special tokens)
    without the padding and truncation settings, which change no id; another tokenizer is its
    class and vocabulary. The special token ids are added either way.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("padding", None)
        spec.pop("truncation", None)
    else:
        spec = {"class": type(tokenizer).__name__, "vocab": sorted(tokenizer.get_vocab().items())}
    spec["special"] = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer)]
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def encode_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens, in one batched call.

    A fast tokenizer is called through its Rust backend (`encode_batch_fast`, multi-threaded
    unless TOKENIZERS_PARALLELISM=false): the same ids as ``tokenizer(texts)``, twice as fast and
    lighter, without the character offsets and attention masks nobody reads here.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def bpe_tokenizer(texts: list[str], vocab_size: int = 4096):
    """A byte-level BPE trained in code on ``texts`` (LLaMA-like specials, BOS prepended).

    A realistic stand-in for a model's tokenizer where none can be downloaded: benchmarks and
    tests of a changed tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=BYTE_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
