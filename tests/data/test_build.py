"""Map-style training data on the embedded corpus: packing invariants, subset rule, cache life cycle."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from dprope.config import ConfigError
from dprope.data import EMBEDDED, build_train_dataset, tokenizer_fingerprint
from dprope.data.cache import COMPLETE, cache_key, cache_location
from dprope.data.packing import token_dtype
from dprope.data.sources import load_documents
from tests.data.conftest import reference_documents, split_documents, unpack


def build(cfg, tokenizer, num_sequences=None, name="byte"):
    return build_train_dataset(cfg, tokenizer, name, num_sequences, target_context=None)


def same_items(a, b, indices) -> bool:
    return all(
        torch.equal(a[i]["input_ids"], b[i]["input_ids"])
        and torch.equal(a[i]["doc_starts"], b[i]["doc_starts"])
        for i in indices
    )


@pytest.mark.parametrize("add_eos", [True, False])
def test_every_document_appears_once_whole_and_in_order(small_cfg, byte_tokenizer, add_eos):
    cfg = dataclasses.replace(small_cfg, drop_tail=False, add_eos=add_eos)
    dataset = build(cfg, byte_tokenizer)
    stream, starts = unpack([dataset[i] for i in range(len(dataset))], cfg.max_length)
    assert starts[0] == 0 and all(dataset[i]["length"] == cfg.max_length for i in range(len(dataset) - 1))
    documents = split_documents(stream, starts)
    expected = reference_documents(cfg, byte_tokenizer)
    assert sorted(documents) == sorted(expected)  # same documents, each contiguous and in order
    assert documents != expected  # ... in the seeded shuffle's order, not the source's


def test_drop_tail_keeps_only_full_sequences(small_cfg, byte_tokenizer):
    kept = build(dataclasses.replace(small_cfg, drop_tail=False), byte_tokenizer)
    dropped = build(small_cfg, byte_tokenizer)
    total = sum(len(d) for d in reference_documents(small_cfg, byte_tokenizer))
    assert len(dropped) == total // small_cfg.max_length and len(kept) == len(dropped) + 1
    assert same_items(kept, dropped, range(len(dropped)))
    assert kept[len(dropped)]["length"] == total % small_cfg.max_length


def test_subset_is_the_prefix_of_the_shuffled_corpus_and_repeats_when_short(small_cfg, byte_tokenizer):
    whole = build(small_cfg, byte_tokenizer)
    subset = build(small_cfg, byte_tokenizer, num_sequences=7)
    assert len(subset) == 7 and subset.meta["num_tokens"] == 7 * small_cfg.max_length
    assert same_items(subset, whole, range(7))
    longer = build(small_cfg, byte_tokenizer, num_sequences=len(whole) + 5)
    assert len(longer) == len(whole) + 5 and longer.num_packed == len(whole)
    assert same_items(longer, whole, range(len(whole)))
    assert all(torch.equal(longer[len(whole) + i]["input_ids"], whole[i]["input_ids"]) for i in range(5))


def sequential_reference(cfg, tokenizer) -> tuple[bytes, list[int]]:
    """tokens.bin and doc_offsets computed the simple way: the seeded shuffle of the split, then
    one `tokenizer(text)` call per document, separators added, everything concatenated."""
    documents = load_documents(cfg, cfg.train_split, "data.train_split", streaming=False)
    stream, offsets = [], []
    for text in documents.shuffle(seed=cfg.seed)["text"]:
        offsets.append(len(stream))
        stream += [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        stream.append(tokenizer.eos_token_id)
    return np.asarray(stream, dtype=token_dtype(len(tokenizer))).tobytes(), offsets


@pytest.mark.parametrize("num_sequences", [None, 9])
@pytest.mark.parametrize("num_proc", [1, 2])
@pytest.mark.parametrize("which", ["byte", "bpe"])
def test_build_is_byte_identical_to_the_sequential_reference(
    synthetic_cfg, byte_tokenizer, bpe_tokenizer, which, num_proc, num_sequences
):
    tokenizer = {"byte": byte_tokenizer, "bpe": bpe_tokenizer}[which]
    cfg = dataclasses.replace(synthetic_cfg, num_proc=num_proc)
    dataset = build(cfg, tokenizer, num_sequences, name=which)
    tokens, offsets = sequential_reference(cfg, tokenizer)
    kept = len(tokens) // 2 if num_sequences is None else 9 * cfg.max_length  # a subset stops early
    assert (dataset.path / "tokens.bin").read_bytes() == tokens[: 2 * kept]
    assert np.load(dataset.path / "doc_offsets.npy").tolist() == [o for o in offsets if o < kept]


def test_build_writes_the_bytes_of_the_previous_release(synthetic_cfg, byte_tokenizer):
    """Hashes of the files the earlier, process-pool build wrote for this corpus and config."""
    dataset = build(dataclasses.replace(synthetic_cfg, num_proc=2), byte_tokenizer)
    assert dataset.meta["num_tokens"] == 224159 and dataset.meta["num_documents"] == 40
    digest = hashlib.sha256((dataset.path / "tokens.bin").read_bytes()).hexdigest()
    assert digest[:16] == "30a3e07f54cbed7a"
    offsets = np.load(dataset.path / "doc_offsets.npy")
    assert (
        offsets.dtype == np.int64 and hashlib.sha256(offsets.tobytes()).hexdigest()[:16] == "33e4bb50301ff551"
    )


def test_cache_key_and_directory_are_those_of_the_previous_release(byte_tokenizer):
    """A cache built before keeps being found: same fingerprint, key and directory name."""
    assert tokenizer_fingerprint(byte_tokenizer) == "e75de85706c16b74"
    key = cache_key(EMBEDDED, "train", {"files": [("/corpus/a.txt", 10, 123)]}, "0123456789abcdef", 64)
    location = cache_location(dataclasses.replace(EMBEDDED, cache_dir="/c"), "train", key)
    assert location.as_posix() == "/c/embedded-train-512-1f06879e21447370"


def test_second_run_reuses_the_cache_without_tokenizing(small_cfg, byte_tokenizer, monkeypatch):
    first = build(small_cfg, byte_tokenizer)
    assert not first.from_cache

    def refuse(*args, **kwargs):
        raise AssertionError("a cache hit tokenized the corpus again")

    monkeypatch.setattr("dprope.data.build._tokenize_into", refuse)
    monkeypatch.setattr("dprope.data.build.load_documents", refuse)
    second = build(small_cfg, byte_tokenizer)
    assert second.from_cache and second.path == first.path and same_items(first, second, range(len(first)))


@pytest.mark.parametrize(
    "change",
    [
        {"max_length": 64},
        {"seed": 1},
        {"add_eos": False},
        {"add_bos": False},
        {"drop_tail": False},
        {"max_documents": 6},
    ],
)
def test_any_changed_key_rebuilds(small_cfg, byte_tokenizer, change):
    first = build(small_cfg, byte_tokenizer)
    second = build(dataclasses.replace(small_cfg, **change), byte_tokenizer)
    assert not second.from_cache and second.path != first.path


def test_another_tokenizer_or_subset_rebuilds(small_cfg, byte_tokenizer, bpe_tokenizer):
    first = build(small_cfg, byte_tokenizer)
    assert build(small_cfg, bpe_tokenizer, name="bpe").path != first.path
    assert build(small_cfg, byte_tokenizer, num_sequences=3).path != first.path


def test_half_written_cache_is_rebuilt(small_cfg, byte_tokenizer):
    first = build(small_cfg, byte_tokenizer)
    expected = [first[i]["input_ids"] for i in range(len(first))]
    (first.path / COMPLETE).unlink()  # as if the copy or the build stopped before the end
    (first.path / "tokens.bin").write_bytes(b"\0" * 10)
    again = build(small_cfg, byte_tokenizer)
    assert not again.from_cache and (again.path / COMPLETE).is_file()
    assert all(torch.equal(again[i]["input_ids"], e) for i, e in enumerate(expected))


def test_crashed_build_leaves_nothing_usable(small_cfg, byte_tokenizer, monkeypatch):
    def crash(self, tokens, lengths):
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr("dprope.data.cache.TokenWriter.append", crash)
        with pytest.raises(RuntimeError, match="killed"):
            build(small_cfg, byte_tokenizer)
    root = small_cfg.cache_root
    assert not [p for p in root.iterdir() if p.name.startswith("embedded-") or ".partial-" in p.name]
    # a partial directory left by a killed process (no exception handler ran) is swept by the next build
    dataset = build(small_cfg, byte_tokenizer)
    stale = dataset.path.parent / f".{dataset.path.name}.partial-999999"
    stale.mkdir()
    (dataset.path / COMPLETE).unlink()
    assert not build(small_cfg, byte_tokenizer).from_cache and not stale.exists()


def test_explicit_cache_path_refuses_another_tokenizer(small_cfg, byte_tokenizer, bpe_tokenizer, tmp_path):
    cfg = dataclasses.replace(small_cfg, cache_path=str(tmp_path / "prepared"))
    build(cfg, byte_tokenizer)
    assert build(cfg, byte_tokenizer).from_cache
    with pytest.raises(ConfigError, match=r"^model\.tokenizer: 'bpe' .*differs from the tokenizer") as err:
        build(cfg, bpe_tokenizer, name="bpe")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^data\.max_length: "):
        build(dataclasses.replace(cfg, max_length=64), byte_tokenizer)
    with pytest.raises(ConfigError, match=r"^num_sequences: "):
        build(cfg, byte_tokenizer, num_sequences=4)


@pytest.mark.parametrize("streaming", [False, True])
def test_the_anchorcontext_packing_reads_one_more_token_per_window(small_cfg, byte_tokenizer, streaming):
    from dprope.data.config import ANCHORCONTEXT

    cfg = dataclasses.replace(small_cfg, streaming=streaming, shuffle_buffer=5).resolved(ANCHORCONTEXT)
    dataset = build(cfg, byte_tokenizer, num_sequences=6)
    items = list(dataset) if streaming else [dataset[i] for i in range(6)]
    if not streaming:
        assert dataset.meta["num_tokens"] == 6 * (cfg.max_length + 1)  # windows of T + 1 tokens
        assert (dataset.meta["key"]["packing"], dataset.meta["key"]["extra_target"]) == ("pieces", True)
    assert len(items) == 6
    for item in items:
        assert item["input_ids"].shape == (cfg.max_length,) and item["length"] == cfg.max_length
        assert item["input_ids"][0] == byte_tokenizer.bos_token_id and item["doc_starts"][0] == 0
        assert byte_tokenizer.eos_token_id not in item["input_ids"].tolist()
        assert item["next_token"] >= 0
    # the next window begins where this one's extra token left the stream: nothing is read twice
    if not streaming:
        tokens = np.fromfile(dataset.path / "tokens.bin", dtype=np.dtype(dataset.meta["dtype"]))
        assert items[1]["input_ids"].tolist() == tokens[cfg.max_length + 1 : 2 * cfg.max_length + 1].tolist()
        assert items[0]["next_token"] == tokens[cfg.max_length]


def test_standard_and_anchorcontext_packing_are_different_caches(small_cfg, byte_tokenizer):
    from dprope.data.config import ANCHORCONTEXT

    standard = build(small_cfg, byte_tokenizer, num_sequences=2)
    authors = build(small_cfg.resolved(ANCHORCONTEXT), byte_tokenizer, num_sequences=2)
    assert standard.path != authors.path and "packing" not in standard.meta["key"]
