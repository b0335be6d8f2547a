"""What the input checks cost, each against the same work without it, in one run:

- bytes events: encoding.encode (one JSON object, valid UTF-8, no line break) against taking
  the bytes as they are (``data + b"\\n"``);
- dict events: put()'s inline dumps with ``OPT_PASSTHROUGH_DATETIME`` and ``default=``
  (which keeps a bad tzinfo away from orjson) against plain orjson, on events without
  datetimes and with one aware datetime; and the alternative of passing ``default=`` only
  on a second try, after orjson refused the event;
- NaN/infinity: what finding them would cost on top of dumps (a walk over a flat event's
  values, or a scan of the line for ``null`` as a pre-filter): the reason they are not found.

    python benchmarks/run.py --only encoding [--quick]
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from firehose_buffer._core.encoding import DUMPS_OPTION, encode, json_default

from .events import fixed_size
from .report import Row

_OPT = orjson.OPT_APPEND_NEWLINE
_dumps = orjson.dumps
_isfinite = math.isfinite
_LIMIT = 1_024_000


def _loop(fn: Callable[[Any], object], items: list[Any]) -> float:
    # Results are dropped at once: keeping thousands alive would measure page faults.
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def _compare(cases: dict[str, tuple[Callable[[Any], object], list[Any]]],
             rounds: int) -> dict[str, dict[str, float]]:
    """ns per item of each case: the median round (the machine is shared: a round another
    process interrupts says nothing about the code) and the mean. Cases run in a new order
    each round, so none always follows the one that warmed its cache."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn, items in cases.values():
        _loop(fn, items)  # warm up
    gc.collect()
    order = list(cases)
    shuffle = random.Random(7).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            fn, items = cases[name]
            times[name].append(_loop(fn, items) / len(items) * 1e9)
    return {
        "median_ns": {name: statistics.median(t) for name, t in times.items()},
        "mean_ns": {name: statistics.fmean(t) for name, t in times.items()},
    }


def _has_nan(value: object) -> bool:
    if isinstance(value, float):
        return not _isfinite(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False


def _flat_walk(event: dict[str, Any]) -> bool:
    """The cheapest walk that could find NaN: flat events of strings skip every value."""
    for value in event.values():
        kind = type(value)
        if kind is str:
            continue
        if (kind is float or kind is dict or kind is list) and _has_nan(value):
            return True
    return False


def _stamped(events: list[dict[str, str]]) -> list[dict[str, Any]]:
    when = dt.datetime(2025, 11, 28, 13, 0, 0, 123456, tzinfo=dt.UTC)
    return [{**e, "at": when} for e in events]


def run(quick: bool) -> list[Row]:
    rounds = 40 if quick else 150
    rows: list[Row] = []
    for size in (512, 4096):
        events = fixed_size(1000, size, seed=size)
        data = [_dumps(e) for e in events]
        stamped = _stamped(events)

        def dumps_plain(e: Any) -> bytes:
            return _dumps(e, option=_OPT)

        def dumps_safe(e: Any) -> bytes:
            # put()'s dict path.
            return _dumps(e, default=json_default, option=DUMPS_OPTION)

        def dumps_retry(e: Any) -> bytes:
            # The alternative: default= only on a second try, once orjson refused the event.
            try:
                return _dumps(e, option=DUMPS_OPTION)
            except TypeError:
                return _dumps(e, default=json_default, option=DUMPS_OPTION)

        def dumps_nan_walk(e: Any) -> object:
            return _dumps(e, option=_OPT), _flat_walk(e)

        def dumps_null_scan(e: Any) -> bool:
            return b"null" in _dumps(e, option=_OPT)

        def bytes_unchecked(b: bytes) -> bytes:
            return b + b"\n"

        def bytes_checked(b: bytes) -> bytes:
            return encode(b, _LIMIT)

        measured = _compare({
            "dumps": (dumps_plain, events),
            "dumps_safe": (dumps_safe, events),
            "retry": (dumps_retry, events),
            "nan_walk": (dumps_nan_walk, events),
            "null_scan": (dumps_null_scan, events),
            "dt_plain": (dumps_plain, stamped),
            "dt_safe": (dumps_safe, stamped),
            "dt_retry": (dumps_retry, stamped),
            "bytes_unchecked": (bytes_unchecked, data),
            "bytes_checked": (bytes_checked, data),
        }, rounds)
        ns = measured["median_ns"]
        details = {"rounds": rounds, "events": len(events), **measured}
        rows += [
            Row(f"enc. bytes event {size} B, checked", ns["bytes_checked"], "ns/event",
                ns["bytes_unchecked"], "unchecked (+newline)",
                notes="one JSON object, UTF-8, no line break: orjson.loads + 2 scans",
                details=details),
            Row(f"enc. dict {size} B, datetime-safe dumps", ns["dumps_safe"], "ns/event",
                ns["dumps"], "orjson.dumps",
                notes="put()'s path: PASSTHROUGH_DATETIME + default=; no datetime in it"),
            Row(f"enc. dict {size} B, default= on retry", ns["retry"], "ns/event",
                ns["dumps"], "orjson.dumps", notes="not done: default= only after a TypeError"),
            Row(f"enc. dict {size} B + 1 datetime, safe", ns["dt_safe"], "ns/event",
                ns["dt_plain"], "orjson native datetime",
                notes="put()'s path, an event with one aware datetime"),
            Row(f"enc. dict {size} B + 1 datetime, retry", ns["dt_retry"], "ns/event",
                ns["dt_plain"], "orjson native datetime",
                notes="not done: refused once, then default="),
            Row(f"enc. dict {size} B + NaN walk", ns["nan_walk"], "ns/event",
                ns["dumps"], "orjson.dumps", notes="not done: NaN/inf become null"),
            Row(f"enc. dict {size} B + null scan", ns["null_scan"], "ns/event",
                ns["dumps"], "orjson.dumps", notes="pre-filter only; not done"),
        ]
    return rows
