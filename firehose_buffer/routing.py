"""Choosing a stream: a stable hash of a key, or sticking to one stream while it fills."""

from __future__ import annotations

import zlib
from collections.abc import Sequence


def stable_index(key: str | bytes, n: int) -> int:
    """The same index for the same key in every process and run (unlike ``hash()``)."""
    data = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    return zlib.crc32(data) % n


def roomiest(current: int, headroom: Sequence[float]) -> int:
    """The stream with the most headroom other than ``current`` (which has just had a
    record's worth and would otherwise win on a float's difference and take a second one
    before the first is even cut), preferring, among equals, the first after ``current``
    so that equal streams are taken in turn."""
    n = len(headroom)
    if n == 1:
        return 0
    best = (current + 1) % n
    for step in range(2, n):
        i = (current + step) % n
        if headroom[i] > headroom[best]:
            best = i
    return best
