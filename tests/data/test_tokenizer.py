"""Tokenizer helpers of the data module: batched ids and the cache-key fingerprint."""

from __future__ import annotations

from pathlib import Path

from dprope.data import load_tokenizer, tokenizer_fingerprint
from dprope.data.embedded import embedded_files
from dprope.data.tokenizer import encode_texts


def test_encode_texts_matches_the_tokenizer_call(byte_tokenizer, bpe_tokenizer):
    texts = [Path(p).read_text() for p in embedded_files("test")[:3]] + ["", "héllo wörld"]
    for tokenizer in (byte_tokenizer, bpe_tokenizer):
        assert encode_texts(tokenizer, texts) == tokenizer(texts, add_special_tokens=False)["input_ids"]


def test_fingerprint_survives_save_and_load(byte_tokenizer, bpe_tokenizer, tmp_path):
    bpe_tokenizer.save_pretrained(tmp_path / "bpe")
    reloaded = load_tokenizer(str(tmp_path / "bpe"))
    assert tokenizer_fingerprint(reloaded) == tokenizer_fingerprint(bpe_tokenizer)
    assert tokenizer_fingerprint(load_tokenizer("byte")) == tokenizer_fingerprint(byte_tokenizer)
    assert tokenizer_fingerprint(bpe_tokenizer) != tokenizer_fingerprint(byte_tokenizer)
