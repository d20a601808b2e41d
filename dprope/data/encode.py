"""Tokenizing a stream of documents on several cores, in order, in memory bounded by the call size.

`encoded_batches` regroups the texts into tokenizer calls and yields each call's documents joined
into one token array (`join_documents`), in the input's order, so the cache writer and the
streaming packer do no per-token Python work.

Parallelism: a fast tokenizer's Rust encoder releases the GIL while it works, so ``threads``
Python threads, each encoding its own call, keep that many cores busy. There is no worker to
start (a spawned process imports the whole stack and unpickles the tokenizer before its first
document), and every thread works in the same memory; only turning each call's ids into one
array holds the GIL (a few percent of the tokenizing time with the byte tokenizer). A corpus of
a single call, or ``threads == 1``, is tokenized in the calling thread; a tokenizer without a
Rust backend holds the GIL throughout, so it too runs in the calling thread.

Memory: a call's `Encoding` objects take about 130 bytes a token (the byte tokenizer's strings,
offsets and masks), so a call holds at most ``batch_size`` documents and `CALL_CHARS`
characters (a longer document goes alone), whichever comes first; at most `QUEUE` calls per
thread wait in flight, their results being compact arrays; after a long document the freed
pages go back to the system. The transient is then set by the call size and the longest
document, not by which documents a batch happens to draw together.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dprope.data.packing import join_documents
from dprope.data.tokenizer import encode_texts

CALL_CHARS = 1 << 18  # characters of one tokenizer call: ~35 MB of Encodings with the byte tokenizer
QUEUE = 4  # calls in flight per thread: enough that a long document does not leave the others idle


def tokenizer_calls(
    batches: Iterable[list[str]], max_documents: int, max_chars: int = CALL_CHARS
) -> Iterator[list[str]]:
    """The texts, in order, regrouped into calls of at most ``max_documents`` documents and
    ``max_chars`` characters (a longer document forms a call alone)."""
    call: list[str] = []
    chars = 0
    for texts in batches:
        for text in texts:
            if call and (len(call) == max_documents or chars + len(text) > max_chars):
                yield call
                call, chars = [], 0
            call.append(text)
            chars += len(text)
    if call:
        yield call


def encoded_batches(
    batches: Iterable[list[str]],
    tokenizer,
    separators: tuple[int | None, int | None],
    dtype: np.dtype,
    threads: int,
    max_documents: int,
    max_chars: int = CALL_CHARS,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`join_documents` of each tokenizer call over the texts, in order, on ``threads`` threads.

    The ids of every document are those of ``tokenizer(text, add_special_tokens=False)``
    whatever the threads and call sizes: only how the stream is cut into arrays changes.
    """
    calls = tokenizer_calls(batches, max_documents, max_chars)
    encode = functools.partial(
        _encode_call, tokenizer=tokenizer, separators=separators, dtype=dtype, max_chars=max_chars
    )
    first, second = next(calls, None), next(calls, None)
    if threads == 1 or second is None or getattr(tokenizer, "backend_tokenizer", None) is None:
        yield from map(encode, itertools.chain(filter(None, (first, second)), calls))
        return
    pool = ThreadPoolExecutor(threads, thread_name_prefix="tokenize")
    pending: deque = deque()
    try:
        for call in itertools.chain((first, second), calls):
            pending.append(pool.submit(encode, call))
            if len(pending) >= QUEUE * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # a consumer that stops early (a subset, a stream's last sequence) leaves no work running
        pool.shutdown(wait=True, cancel_futures=True)


def _encode_call(
    texts: list[str], tokenizer, separators, dtype, max_chars: int
) -> tuple[np.ndarray, np.ndarray]:
    encoded = join_documents(encode_texts(tokenizer, texts), *separators, dtype)
    if len(texts) == 1 and len(texts[0]) > max_chars:
        _return_freed_memory()  # a long document's Encodings: hundreds of MB the allocator would keep
    return encoded


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def _return_freed_memory() -> None:
    """Give the pages freed in every thread's malloc arena back to the system.

    glibc gives each thread its own arena and keeps what is freed there for later use, so after
    a long document went through each thread in turn, every arena would hold its transient: the
    RSS would grow with the number of long documents seen, that is with the corpus size.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
