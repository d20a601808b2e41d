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
thread wait in flight, their results being compact arrays. After a long document the freed
pages go back to the system. With ``steady`` (streams), the calls being encoded at once hold at
most the larger of ``threads x CALL_CHARS`` characters and the longest document seen so far
(`CharacterBudget`; calls start in order), so two long documents never meet in the threads and
the transient is what the longest document needs alone, however many documents pass; and every
long document is encoded on one dedicated thread, so that only one malloc arena ever grows to a
long document's size (on the shared threads, each arena would in turn).
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor

import numpy as np

from dprope.data.memory import return_freed_memory
from dprope.data.packing import join_documents
from dprope.data.tokenizer import encode_texts

CALL_CHARS = 1 << 18  # characters of one tokenizer call: ~35 MB of Encodings with the byte tokenizer
TRIM_EVERY = 8  # calls' worth of characters between two returns of freed memory
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
    steady: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`join_documents` of each tokenizer call over the texts, in order, on ``threads`` threads.

    The ids of every document are those of ``tokenizer(text, add_special_tokens=False)``
    whatever the threads and call sizes: only how the stream is cut into arrays changes.
    ``steady`` (a stream's ``data.steady_memory``) bounds the characters encoded at once
    (`CharacterBudget`) and returns freed memory every `TRIM_EVERY` calls, for a peak that does
    not depend on how many documents pass; without it (a cache build, which ends) the threads
    run unbounded, a few percent faster, and freed memory goes back after long documents only.
    """
    calls = tokenizer_calls(batches, max_documents, max_chars)
    encode = functools.partial(
        _encode_call,
        tokenizer=tokenizer,
        separators=separators,
        dtype=dtype,
        freed=FreedMemory(max_chars, TRIM_EVERY if steady else None),
    )
    first, second = next(calls, None), next(calls, None)
    if threads == 1 or second is None or getattr(tokenizer, "backend_tokenizer", None) is None:
        yield from map(encode, itertools.chain(filter(None, (first, second)), calls))
        return
    budget = CharacterBudget(threads * max_chars) if steady else None
    pool = ThreadPoolExecutor(threads, thread_name_prefix="tokenize")
    long_pool = ThreadPoolExecutor(1, thread_name_prefix="tokenize-long") if steady else pool
    pending: deque = deque()
    try:
        for call in itertools.chain((first, second), calls):
            if budget is None:
                pending.append(pool.submit(encode, call))
            else:  # a call over max_chars is one long document (`tokenizer_calls`)
                size = sum(map(len, call))
                runner = long_pool if size > max_chars else pool
                pending.append(runner.submit(budget.run, budget.ticket(size), encode, call))
            if len(pending) >= QUEUE * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # a consumer that stops early (a subset, a stream's last sequence) leaves no work running
        if budget is not None:
            budget.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        long_pool.shutdown(wait=True, cancel_futures=True)


class CharacterBudget:
    """Admits tokenizer calls in submission order while the characters being encoded stay within
    the larger of ``limit`` and the longest call seen so far (a call always starts when nothing
    else is being encoded)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0
        self.issued = 0  # tickets handed out, in submission order
        self.admitted = 0  # tickets started
        self.cancelled = False
        self.ready = threading.Condition()

    def ticket(self, size: int) -> tuple[int, int]:
        """The place in line of a call of ``size`` characters, and its size; raises the limit to
        the longest call seen."""
        with self.ready:
            self.limit = max(self.limit, size)
            self.issued += 1
            return self.issued - 1, size

    def run(self, ticket: tuple[int, int], function, texts: list[str]):
        order, size = ticket
        with self.ready:
            self.ready.wait_for(
                lambda: (
                    self.cancelled
                    or (self.admitted == order and (self.in_use == 0 or self.in_use + size <= self.limit))
                )
            )
            if self.cancelled:
                raise CancelledError
            self.admitted += 1
            self.in_use += size
            self.ready.notify_all()
        try:
            return function(texts)
        finally:
            with self.ready:
                self.in_use -= size
                self.ready.notify_all()

    def cancel(self) -> None:
        """Wakes every waiting call to give up (the consumer stopped early)."""
        with self.ready:
            self.cancelled = True
            self.ready.notify_all()


def _encode_call(
    texts: list[str], tokenizer, separators, dtype, freed: FreedMemory
) -> tuple[np.ndarray, np.ndarray]:
    encoded = join_documents(encode_texts(tokenizer, texts), *separators, dtype)
    freed.encoded(sum(map(len, texts)))
    return encoded


class FreedMemory:
    """Gives the pages freed in every thread's malloc arena back to the system
    (`return_freed_memory`) after a long document, and after every ``every`` calls' worth of text.

    glibc gives each thread its own arena and keeps what is freed there for later use; the
    Encodings of a call are hundreds of thousands of small allocations, so without a trim the
    arenas' free but resident pages would grow with the number of calls, that is with the
    corpus size. A trim costs a walk over the arenas' free chunks, hence not after every call.
    """

    def __init__(self, call_chars: int, every: int | None):
        self.call_chars, self.every = call_chars, every
        self.since_trim = 0
        self.lock = threading.Lock()

    def encoded(self, chars: int) -> None:
        with self.lock:
            self.since_trim += chars
            if chars <= self.call_chars and (
                self.every is None or self.since_trim < self.every * self.call_chars
            ):
                return
            self.since_trim = 0
        return_freed_memory()
