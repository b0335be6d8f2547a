"""Choosing a stream: a stable hash of a key, or sticking to one stream while it fills."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from .._service.firehose import FIREHOSE
from ..errors import EventValueError
from .encoding import encode_fields, json_default


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


class Router:
    """Which stream an event goes to: the one object put(), replay and simulations share.

    Keyed (``partition_key`` or ``router``): :meth:`route` decides per event, and raises
    :class:`EventValueError` for what cannot be routed. Keyless: every event goes to
    ``sticky`` until the worker, seeing that stream has had a record's worth, calls
    :meth:`visit_full` to move on; low traffic then makes few full records instead of many
    thin ones, and the choice of the next stream weighs quota headroom. ``sticky`` is read
    without a lock by put() and moved only under the accumulator's lock (by the worker's
    :meth:`visit_full` and put()'s slow path through :meth:`segment_full`).
    """

    __slots__ = ("_index", "_key", "_max_line", "_router", "_sealed", "keyed", "names", "sticky")

    def __init__(
        self,
        names: Sequence[str],
        partition_key: str | None = None,
        router: Callable[[Any], int | str] | None = None,
        *,
        max_line: int = FIREHOSE.max_record_bytes,
    ) -> None:
        self.names = tuple(names)
        self._max_line = max_line
        self._index = {name: i for i, name in enumerate(self.names)}
        self._key = partition_key
        self._router = router
        self.keyed = partition_key is not None or router is not None
        self.sticky = 0
        #: Segments the sticky stream has moved past in this visit.
        self._sealed = 0

    def route(self, event: Any, fields: Mapping[str, Any]) -> int:
        """The stream index for a keyed event, or ``sticky`` when it has no key.

        ``fields``: what :func:`.encoding.encode_fields` read from the event (the event
        itself for a dict), so a key is read from exactly what was encoded.
        """
        if self._router is not None:
            return self._call_router(event)
        value = fields.get(self._key) if self._key is not None else None
        if value is None:
            return self.sticky
        if not isinstance(value, str | bytes):
            value = orjson.dumps(value, default=json_default,
                                 option=orjson.OPT_PASSTHROUGH_DATETIME)
        return stable_index(value, len(self.names))

    def _call_router(self, event: Any) -> int:
        assert self._router is not None
        try:
            choice = self._router(event)
        except Exception as exc:
            raise EventValueError(f"router raised for this event: {exc!r}") from exc
        if isinstance(choice, str):
            index = self._index.get(choice)
            if index is None:
                raise EventValueError(f"router chose unknown stream {choice!r}")
            return index
        if isinstance(choice, bool) or not isinstance(choice, int) or not (
            0 <= choice < len(self.names)
        ):
            raise EventValueError(f"router returned {choice!r}, not a stream index or name")
        return choice

    def index_of(self, name: str) -> int | None:
        """The index of stream ``name`` in this buffer, or None if it has none by that name."""
        return self._index.get(name)

    def for_stream(self, name: str, line: bytes) -> int:
        """A spooled line meant for ``name``: that stream if this buffer has it, else routed
        as put() would route it."""
        index = self._index.get(name)
        if index is not None:
            return index
        if not self.keyed:
            return self.sticky
        try:
            return self.route(line, encode_fields(line, self._max_line)[1])
        except EventValueError:
            return self.sticky

    def segment_full(self, index: int) -> None:
        """A stream moved to a new segment. A keyless burst can fill segments faster than
        the worker ticks (it moves on after a record's worth): once the sticky stream has
        filled a whole segment (several records) in this visit, move on here too."""
        if index != self.sticky:
            return
        self._sealed += 1
        if self._sealed >= 2:
            self._sealed = 0
            self.sticky = (index + 1) % len(self.names)

    def visit_full(self, headroom: Sequence[float]) -> None:
        """The sticky stream has had a record's worth: move to the roomiest other one."""
        self._sealed = 0
        self.sticky = roomiest(self.sticky, headroom)
