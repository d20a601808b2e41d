"""Cache integrity on open: a damaged cache in the cache directory is rebuilt with a warning; a
damaged pinned ``data.cache_path`` is a one-line error. Nothing is read beyond sizes."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from dprope.config import ConfigError
from dprope.data import build_train_dataset
from dprope.data.cache import DOC_OFFSETS, META, TOKENS, damage, read_meta


def build(cfg, tokenizer):
    return build_train_dataset(cfg, tokenizer, "byte", None, target_context=None)


def truncate(path, keep_bytes: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(keep_bytes)


DAMAGES = {
    "tokens truncated": lambda p: truncate(p / TOKENS, (p / TOKENS).stat().st_size // 2),
    "tokens grown": lambda p: open(p / TOKENS, "ab").write(b"\0\0"),
    "offsets truncated": lambda p: truncate(p / DOC_OFFSETS, 100),
    "offsets missing": lambda p: (p / DOC_OFFSETS).unlink(),
    "meta unreadable": lambda p: (p / META).write_text("{"),
}


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_cache_is_rebuilt_with_a_warning(how, small_cfg, byte_tokenizer, caplog):
    first = build(small_cfg, byte_tokenizer)
    expected = [first[i]["input_ids"] for i in range(len(first))]
    DAMAGES[how](first.path)
    with caplog.at_level(logging.WARNING, logger="dprope.data.cache"):
        again = build(small_cfg, byte_tokenizer)
    assert not again.from_cache
    assert any("is damaged" in r.message and "rebuilding" in r.message for r in caplog.records)
    assert all(torch.equal(again[i]["input_ids"], e) for i, e in enumerate(expected))
    assert build(small_cfg, byte_tokenizer).from_cache  # and the rebuilt one is reused as it is


def test_damaged_pinned_cache_path_is_a_one_line_error(small_cfg, byte_tokenizer, tmp_path):
    cfg = dataclasses.replace(small_cfg, cache_path=str(tmp_path / "prepared"))
    dataset = build(cfg, byte_tokenizer)
    size = (dataset.path / TOKENS).stat().st_size
    truncate(dataset.path / TOKENS, size - 2)
    with pytest.raises(ConfigError) as err:
        build(cfg, byte_tokenizer)
    message = str(err.value)
    assert message.startswith("data.cache_path: ") and "\n" not in message
    assert f"{TOKENS} has {size - 2} bytes" in message
    assert (dataset.path / TOKENS).stat().st_size == size - 2  # the user's directory is left alone


def test_an_intact_cache_passes_and_the_check_reads_only_sizes(small_cfg, byte_tokenizer):
    dataset = build(small_cfg, byte_tokenizer)
    meta = read_meta(dataset.path)
    assert meta is not None and damage(dataset.path, meta) is None
    # flipping token values keeps every size: the open-time check does not read data
    tokens = np.memmap(dataset.path / TOKENS, dtype=meta["dtype"], mode="r+")
    tokens[:10] = 0
    tokens.flush()
    assert damage(dataset.path, meta) is None
