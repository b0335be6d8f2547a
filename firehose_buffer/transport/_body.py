"""PutRecordBatch bodies built in memory reused from request to request.

A body is the records base64-encoded inside a little JSON: 4/3 of the batch. Built as one
new ``bytes`` per request (and joined from parts, another), each of the hundreds of KB is
memory the allocator takes fresh from the kernel, page by page: minor page faults that cost
more than the encoding. Here each sender thread has one buffer, grown to the largest body
it has built and then reused, and base64 goes in in pieces of :data:`PIECE_BYTES` whose
temporary output the allocator serves from its free lists. Base64 of consecutive pieces
whose lengths are multiples of 3 is the base64 of the whole, so the text is the same.
"""

from __future__ import annotations

import binascii
import mmap
import threading
from collections.abc import Sequence

import orjson

#: Raw bytes base64-encoded at a time: a multiple of 3, small enough that its 64 KiB output
#: comes from the allocator's free lists (below glibc's mmap threshold).
PIECE_BYTES = 48 * 1024
_MIN_CAPACITY = 1024 * 1024
_b2a = binascii.b2a_base64


class BodyBuffer:
    """One thread's reused body memory (see the module's doc)."""

    __slots__ = ("_mm",)

    def __init__(self) -> None:
        self._mm = mmap.mmap(-1, _MIN_CAPACITY, flags=mmap.MAP_PRIVATE)

    def build(self, stream: str, records: Sequence[bytes | memoryview]) -> memoryview:
        """The body; valid until this buffer's next call (the caller sends it first)."""
        head = b'{"DeliveryStreamName":' + orjson.dumps(stream) + b',"Records":['
        size = len(head) + 2 + sum(12 + 4 * ((len(r) + 2) // 3) for r in records)
        mm = self._mm
        if len(mm) < size:
            grown = mmap.mmap(-1, max(size, 2 * len(mm)), flags=mmap.MAP_PRIVATE)
            mm.close()
            mm = self._mm = grown
        mm.seek(0)
        write = mm.write
        write(head)
        first = True
        for record in records:
            write(b'{"Data":"' if first else b',{"Data":"')
            first = False
            view = memoryview(record)
            for start in range(0, len(view), PIECE_BYTES):
                write(_b2a(view[start:start + PIECE_BYTES], newline=False))
            write(b'"}')
        write(b"]}")
        return memoryview(mm)[:mm.tell()]


_local = threading.local()


def body_buffer() -> BodyBuffer:
    """The calling thread's body buffer."""
    buffer: BodyBuffer | None = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = BodyBuffer()
    return buffer
