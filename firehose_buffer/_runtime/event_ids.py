"""Event ids: a unique, time-ordered id put into every mapping event that lacks one
(``BufferConfig(event_id_field=...)``), so that consumers can deduplicate what a lost answer
made the buffer send twice.

Each id is a UUID version 7 (RFC 9562) in its usual text form: 48 bits of Unix time in
milliseconds, then 74 bits that are, per process, a random 26-bit prefix and a 48-bit counter
starting at a random value. Ids of one process sort by time and then by put() order; two
processes collide only if, within the same millisecond, their random prefixes (1 in 2**26)
and counters (1 in 2**48 per id) both meet. A forked child draws new random bits.

Cost: one clock read, one counter step and one ``%`` format per event, and the id spliced in
front of the encoded line: ~0.45 µs for the stamp alone, 0.5-1 µs of put() in all
(``python benchmarks/run.py --only hot_path``; ``str(uuid.uuid4())`` alone costs ~2 µs).
The line is spliced rather than the event copied: the caller's dict is never changed.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

import orjson

_MASK48 = (1 << 48) - 1


class EventIds:
    """Makes the id prefix of encoded lines for one field name."""

    __slots__ = ("_head", "_key", "_mid", "_ms", "_next")

    def __init__(self, field: str) -> None:
        self._key = b"{" + orjson.dumps(field) + b':"'
        self._ms = -1
        self._head = b""
        bits = int.from_bytes(os.urandom(10), "big")
        # Version nibble 7, 12 random bits; variant 0b10, 14 random bits.
        self._mid = b"-7%03x-%04x-" % (bits & 0xFFF, 0x8000 | (bits >> 12) & 0x3FFF)
        self._next: Callable[[], int] = itertools.count((bits >> 26) & _MASK48).__next__

    def stamp(self, line: bytes) -> bytes:
        """``line`` (an encoded JSON object with its newline) with the id field first.
        An empty object gets the field alone."""
        ms = time.time_ns() // 1_000_000
        if ms != self._ms:
            hex_ms = b"%012x" % ms
            self._head = self._key + hex_ms[:8] + b"-" + hex_ms[8:] + self._mid
            self._ms = ms
        head = self._head + b"%012x" % (self._next() & _MASK48)
        if line[1] == 0x7D:  # b"}": no other field
            return head + b'"}\n'
        return head + b'",' + line[1:]
