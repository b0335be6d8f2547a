"""Realistic events: flat string-to-string dicts, shared fields plus custom ones.

Every value is random (seeded), so neither orjson nor the packer meets the same bytes twice
in a row, and every event encodes to exactly the size asked for, so byte rates are exact.
"""

from __future__ import annotations

import base64
import random

import orjson

#: Placeholder for a put timestamp (nanoseconds since the epoch, 19 digits) that the end to
#: end benchmarks overwrite per put without changing the event's encoded size.
PUT_NS_FIELD = "put_ns"
PUT_NS_PLACEHOLDER = "0" * 19

Event = dict[str, str]


def _word(rng: random.Random, n: int) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(n)).decode()[:n]


def make_event(rng: random.Random, size: int, *, stamped: bool = False) -> Event:
    """One event whose ``orjson.dumps`` is exactly ``size`` bytes (newline not counted)."""
    event: Event = {
        "timestamp": f"2025-11-28T13:{rng.randrange(60):02d}:{rng.randrange(60):02d}."
                     f"{rng.randrange(10**6):06d}Z",
        "service": rng.choice(["checkout", "search", "auth", "catalog", "billing"]),
        "env": "production",
        "region": "eu-central-1",
        "host": f"ip-10-0-{rng.randrange(256)}-{rng.randrange(256)}",
        "level": rng.choice(["INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG"]),
        "trace_id": _word(rng, 32),
        "span_id": _word(rng, 16),
        "request_id": _word(rng, 36),
        "user_id": _word(rng, 12),
        "message": "",
    }
    if stamped:
        event[PUT_NS_FIELD] = PUT_NS_PLACEHOLDER
    i = 0
    length = len(orjson.dumps(event))
    while length < size - 160:
        key, value = f"attr_{i:02d}", _word(rng, rng.randrange(8, 120))
        event[key] = value
        length += len(key) + len(value) + 6  # ASCII only: two pairs of quotes, colon, comma
        i += 1
    # The message fills the rest, so the encoding lands on ``size`` exactly.
    short = size - len(orjson.dumps(event))
    if short < 0:
        raise ValueError(f"events cannot be as small as {size} bytes")
    words: list[str] = []
    while sum(map(len, words)) + len(words) < short:
        words.append(_word(rng, rng.randrange(3, 9)))
    event["message"] = " ".join(words)[:short].rstrip().ljust(short, "x")
    return event


def fixed_size(count: int, size: int, seed: int = 1, *, stamped: bool = False) -> list[Event]:
    rng = random.Random(seed)
    return [make_event(rng, size, stamped=stamped) for _ in range(count)]


def mixed(count: int, seed: int = 2, low: int = 512, high: int = 4096) -> list[Event]:
    """Sizes uniform in [low, high] bytes."""
    rng = random.Random(seed)
    return [make_event(rng, rng.randrange(low, high + 1)) for _ in range(count)]
