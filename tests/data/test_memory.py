"""Allocator settings of a stream: after `steady_allocator`, a freed large buffer no longer
moves glibc's mmap threshold up (a later 2 MiB buffer is still its own mapping, so freeing it
returns it), and Arrow allocates through the system allocator. Each case runs in a fresh
process, since the settings are the process's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dprope.data.memory import _libc

PROBE = """
import ctypes, json, sys
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
from dprope.data.memory import steady_allocator
steady = sys.argv[1] == "steady" and steady_allocator()
libc.free(libc.malloc(24 << 20))  # a large buffer freed: glibc's dynamic threshold rises past 2 MiB
before = libc.mallinfo2().hblks
buffer = libc.malloc(2 << 20)
mapped = libc.mallinfo2().hblks - before
libc.free(buffer)
import pyarrow
print(json.dumps({"steady": steady, "mapped": mapped, "pool": pyarrow.default_memory_pool().backend_name}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_libc() is None, reason="the C library is not glibc")
def test_steady_allocator_keeps_large_buffers_mapped_and_arrow_on_the_system_pool():
    default, steady = probe("default"), probe("steady")
    assert not default["steady"] and default["mapped"] == 0  # glibc's default: into the heap
    assert steady["steady"] and steady["mapped"] == 1
    assert steady["pool"] == "system"
