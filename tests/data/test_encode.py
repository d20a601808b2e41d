"""Parallel tokenizing: calls bounded in documents and characters, ids and order as one document at a
time, threads only when there is more than one call, none left after an early stop."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dprope.data.encode import encoded_batches, tokenizer_calls
from tests.data.conftest import synthetic_texts

BOS, EOS = 1, 2


def tokenize_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tokenize")]


def test_calls_keep_the_order_and_both_bounds():
    texts = synthetic_texts(60)
    batches = [texts[i : i + 7] for i in range(0, len(texts), 7)]
    calls = list(tokenizer_calls(batches, max_documents=5, max_chars=10_000))
    assert [t for call in calls for t in call] == texts
    assert all(len(call) <= 5 for call in calls)
    assert all(sum(map(len, call)) <= 10_000 or len(call) == 1 for call in calls)
    assert any(len(call) == 1 and len(call[0]) > 10_000 for call in calls)  # a long document goes alone
    # a call is cut only when the next document would break a bound
    for call, after in zip(calls, calls[1:], strict=False):
        assert len(call) == 5 or sum(map(len, call)) + len(after[0]) > 10_000


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("which", ["byte", "bpe"])
def test_ids_and_order_are_those_of_one_document_at_a_time(byte_tokenizer, bpe_tokenizer, which, threads):
    tokenizer = {"byte": byte_tokenizer, "bpe": bpe_tokenizer}[which]
    texts = synthetic_texts(50)
    batches = [texts[i : i + 8] for i in range(0, len(texts), 8)]
    encoded = list(encoded_batches(batches, tokenizer, (BOS, EOS), np.dtype(np.uint16), threads, 4, 5_000))
    assert len(encoded) > 10  # many calls, so several run at once
    tokens = np.concatenate([t for t, _ in encoded])
    lengths = np.concatenate([n for _, n in encoded])
    expected = [[BOS, *tokenizer(text, add_special_tokens=False)["input_ids"], EOS] for text in texts]
    assert tokens.dtype == np.uint16 and tokens.tolist() == [i for ids in expected for i in ids]
    assert lengths.tolist() == [len(ids) for ids in expected]


def test_threads_start_only_for_more_than_one_call_and_stop_with_the_consumer(byte_tokenizer):
    one_call = encoded_batches(
        [["a short text", "another"]], byte_tokenizer, (BOS, EOS), np.dtype(np.uint16), 4, 64
    )
    next(one_call)
    assert not tokenize_threads()  # a corpus of one call is tokenized in place
    texts = synthetic_texts(60)
    many = encoded_batches([texts], byte_tokenizer, (BOS, EOS), np.dtype(np.uint16), 2, 2, 1_000)
    next(many)
    assert tokenize_threads()
    many.close()  # as a subset build or a finished stream does
    assert not tokenize_threads()


def test_long_documents_never_meet_in_the_threads(byte_tokenizer, monkeypatch):
    """With steady=True the characters being encoded at once stay within threads x max_chars or
    the longest document alone: two long documents side by side (which 3 free threads would take
    together) are encoded one after the other, on one dedicated thread, and the ids stay those of
    one document at a time."""
    import dprope.data.encode as encode

    lock, in_flight, most, threads = threading.Lock(), [0], [0], {}
    real = encode.encode_texts

    def recording(tokenizer, texts):
        with lock:
            threads.setdefault(len(texts[0]) > 800, set()).add(threading.current_thread().name)
            in_flight[0] += sum(map(len, texts))
            most[0] = max(most[0], in_flight[0])
        threading.Event().wait(0.02)  # long enough for the other threads to start their calls
        try:
            return real(tokenizer, texts)
        finally:
            with lock:
                in_flight[0] -= sum(map(len, texts))

    monkeypatch.setattr(encode, "encode_texts", recording)
    short = [text[:500] for text in synthetic_texts(12)]
    long = [f"{i} " + "x" * 3_000 for i in range(3)]  # each longer than 3 x max_chars, two over both
    texts = short[:4] + long + short[4:]
    encoded = list(
        encoded_batches([texts], byte_tokenizer, (BOS, EOS), np.dtype(np.uint16), 3, 1, 800, steady=True)
    )
    assert 2 * min(map(len, long)) > max(3 * 800, max(map(len, long))) >= most[0]  # two would break it
    # every long document on the one dedicated thread (one malloc arena), the others never there
    assert len(threads[True]) == 1 and next(iter(threads[True])).startswith("tokenize-long")
    assert not any(name.startswith("tokenize-long") for name in threads[False])
    tokens = np.concatenate([t for t, _ in encoded]).tolist()
    assert tokens == [
        i for text in texts for i in (BOS, *byte_tokenizer(text, add_special_tokens=False)["input_ids"], EOS)
    ]


def test_freed_memory_goes_back_after_a_long_call_and_every_few_calls(monkeypatch):
    import dprope.data.encode as encode

    trims = []
    monkeypatch.setattr(encode, "return_freed_memory", lambda: trims.append(1))
    freed = encode.FreedMemory(call_chars=100, every=encode.TRIM_EVERY)
    freed.encoded(101)  # a long document: at once
    assert len(trims) == 1
    for _ in range(encode.TRIM_EVERY - 1):
        freed.encoded(100)
    assert len(trims) == 1
    freed.encoded(100)  # TRIM_EVERY calls' worth of text
    assert len(trims) == 2
