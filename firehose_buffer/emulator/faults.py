"""Injected faults: scripted ones consumed in order, and seeded random ones.

A fault applies to one well-formed ``PutRecord``/``PutRecordBatch`` call to an existing
stream (calls rejected for a missing stream or a broken limit never consume one). A scripted
fault, when one matches the call's stream, replaces the random draws for that call, so a test
that scripts a fault gets exactly that fault and nothing else.

Random faults are drawn from one ``random.Random(seed)`` in a fixed order per call (latency,
then the whole-call outcome, then one draw per record when a record rate is set), so a
sequence of calls with the same shapes gets the same faults on every run with the same seed.
"""

from __future__ import annotations

import enum
import math
import random
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

SERVICE_UNAVAILABLE = "ServiceUnavailableException"
INTERNAL_FAILURE = "InternalFailure"
RECORD_ERROR_MESSAGES = {
    SERVICE_UNAVAILABLE: "Slow down.",
    INTERNAL_FAILURE: "Internal service failure.",
}
_DEFAULT_HTTP_CODES = {500: INTERNAL_FAILURE, 503: SERVICE_UNAVAILABLE}


class FaultKind(enum.StrEnum):
    """What a :class:`Fault` does to the call that consumes it."""

    FAIL_RECORDS = "fail_records"
    HTTP_ERROR = "http_error"
    LATENCY = "latency"
    RESET_BEFORE_STORE = "reset_before_store"
    RESET_AFTER_STORE = "reset_after_store"


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted fault. Build it with the factory methods, not the constructor.

    ``stream=None`` matches a call to any stream; otherwise only calls to that stream consume
    the fault (calls to other streams pass it by and leave it queued).
    """

    kind: FaultKind
    stream: str | None = None
    fraction: float = 1.0
    indices: tuple[int, ...] | None = None
    code: str = SERVICE_UNAVAILABLE
    status: int = 500
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be within [0, 1], got {self.fraction}")
        if self.seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {self.seconds}")
        if self.kind is FaultKind.FAIL_RECORDS and self.code not in RECORD_ERROR_MESSAGES:
            raise ValueError(f"record error code must be one of {sorted(RECORD_ERROR_MESSAGES)}")
        if self.kind is FaultKind.HTTP_ERROR and not 400 <= self.status <= 599:
            raise ValueError(f"HTTP error status must be 4xx or 5xx, got {self.status}")

    @classmethod
    def fail_records(
        cls,
        fraction: float = 1.0,
        *,
        code: str = SERVICE_UNAVAILABLE,
        indices: Iterable[int] | None = None,
        stream: str | None = None,
    ) -> Fault:
        """Fail records inside an HTTP 200 with ``code`` (or the whole ``PutRecord`` call).

        ``indices`` names the failed records exactly; otherwise ``fraction`` of them fail,
        spread evenly (0.5 fails indices 1, 3, 5, ...; 1.0 fails all). Failed records consume
        no quota and are not stored.
        """
        return cls(
            FaultKind.FAIL_RECORDS,
            stream,
            fraction=fraction,
            indices=None if indices is None else tuple(indices),
            code=code,
        )

    @classmethod
    def http_error(
        cls, status: int = 500, *, code: str | None = None, stream: str | None = None
    ) -> Fault:
        """Fail the whole call with ``status`` and ``{"__type": code}``; nothing is stored.

        ``code`` defaults to ``InternalFailure`` for 500 and ``ServiceUnavailableException``
        for 503 (and anything else), which botocore reports as ``ClientError`` codes (and, by
        default, retries).
        """
        return cls(
            FaultKind.HTTP_ERROR,
            stream,
            status=status,
            code=code or _DEFAULT_HTTP_CODES.get(status, SERVICE_UNAVAILABLE),
        )

    @classmethod
    def latency(cls, seconds: float, *, stream: str | None = None) -> Fault:
        """Hold the call ``seconds`` before handling it normally (``stop()`` cuts it short)."""
        return cls(FaultKind.LATENCY, stream, seconds=seconds)

    @classmethod
    def reset_before_store(cls, *, stream: str | None = None) -> Fault:
        """Close the connection with a TCP RST without storing anything or answering."""
        return cls(FaultKind.RESET_BEFORE_STORE, stream)

    @classmethod
    def reset_after_store(cls, *, stream: str | None = None) -> Fault:
        """Store the records as usual (quota applies), then RST instead of answering.

        The client cannot tell this from :meth:`reset_before_store`; a resend duplicates.
        """
        return cls(FaultKind.RESET_AFTER_STORE, stream)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_json` reads back (for the control endpoint)."""
        data: dict[str, Any] = {"kind": self.kind.value, "stream": self.stream}
        if self.kind is FaultKind.FAIL_RECORDS:
            data.update(fraction=self.fraction, code=self.code)
            if self.indices is not None:
                data["indices"] = list(self.indices)
        elif self.kind is FaultKind.HTTP_ERROR:
            data.update(status=self.status, code=self.code)
        elif self.kind is FaultKind.LATENCY:
            data["seconds"] = self.seconds
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        kind = FaultKind(data["kind"])
        stream = data.get("stream")
        if kind is FaultKind.FAIL_RECORDS:
            return cls.fail_records(
                float(data.get("fraction", 1.0)),
                code=str(data.get("code", SERVICE_UNAVAILABLE)),
                indices=data.get("indices"),
                stream=stream,
            )
        if kind is FaultKind.HTTP_ERROR:
            status = int(data.get("status", 500))
            return cls.http_error(status, code=data.get("code"), stream=stream)
        if kind is FaultKind.LATENCY:
            return cls.latency(float(data["seconds"]), stream=stream)
        if kind is FaultKind.RESET_BEFORE_STORE:
            return cls.reset_before_store(stream=stream)
        return cls.reset_after_store(stream=stream)


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Random fault rates; all default to 0 (no faults).

    ``record_*`` are the fraction of records failed inside an HTTP 200. ``http_500``,
    ``http_503``, ``reset_before_store`` and ``reset_after_store`` are per-call probabilities
    of mutually exclusive outcomes (they must sum to at most 1). ``latency`` is the per-call
    probability of an added delay of ``latency_seconds``, independent of the rest.
    """

    record_service_unavailable: float = 0.0
    record_internal_failure: float = 0.0
    http_500: float = 0.0
    http_503: float = 0.0
    reset_before_store: float = 0.0
    reset_after_store: float = 0.0
    latency: float = 0.0
    latency_seconds: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "latency_seconds" and not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultRates.{f.name} must be within [0, 1], got {value}")
        if self.latency_seconds < 0:
            raise ValueError("FaultRates.latency_seconds must be >= 0")
        if self.record_service_unavailable + self.record_internal_failure > 1.0:
            raise ValueError("record fault rates must sum to at most 1")
        if self.http_500 + self.http_503 + self.reset_before_store + self.reset_after_store > 1:
            raise ValueError("whole-call fault rates must sum to at most 1")

    @classmethod
    def parse(cls, text: str) -> FaultRates:
        """Read ``"http_500=0.01,record_service_unavailable=0.05,latency=0.1"`` (CLI form)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in known:
                raise ValueError(
                    f"bad fault rate {part!r}; expected NAME=VALUE with NAME in {sorted(known)}"
                )
            values[name] = float(value)
        return cls(**values)

    def to_json(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name != "latency_seconds")


@dataclass(frozen=True, slots=True)
class CallFaults:
    """What the injector decided for one call.

    ``record_errors`` is None when no record fails, else one entry per record: an error code
    or None. ``outcome`` is one of the whole-call kinds or None.
    """

    latency: float = 0.0
    outcome: FaultKind | None = None
    http_status: int = 500
    http_code: str = INTERNAL_FAILURE
    record_errors: list[str | None] | None = None

    def counts(self) -> dict[str, int]:
        """Injected faults by stats key (records count one each, calls one each)."""
        counts: dict[str, int] = {}
        if self.latency > 0:
            counts["latency"] = 1
        if self.outcome is FaultKind.HTTP_ERROR:
            counts[f"http_{self.http_status}"] = 1
        elif self.outcome is not None:
            counts[self.outcome.value] = 1
        if self.outcome in (FaultKind.HTTP_ERROR, FaultKind.RESET_BEFORE_STORE):
            return counts  # the records were never looked at
        for code in self.record_errors or ():
            if code is not None:
                key = "records_" + ("internal_failure" if code == INTERNAL_FAILURE
                                    else "service_unavailable")
                counts[key] = counts.get(key, 0) + 1
        return counts


NO_FAULTS = CallFaults()


def _spread(count: int, fraction: float) -> list[bool]:
    """``fraction`` of ``count`` slots set, evenly spaced and deterministic."""
    return [math.floor((i + 1) * fraction) > math.floor(i * fraction) for i in range(count)]


class FaultInjector:
    """Thread-safe source of :class:`CallFaults`, one per put call."""

    def __init__(self, rates: FaultRates | None = None, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._script: deque[Fault] = deque()
        self._rates = rates or FaultRates()
        self._random_on = self._rates.any
        self._rng = random.Random(seed)

    def script(self, faults: Iterable[Fault]) -> None:
        with self._lock:
            self._script.extend(faults)

    def clear_script(self) -> None:
        with self._lock:
            self._script.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    def set_rates(self, rates: FaultRates, seed: int | None = None) -> None:
        with self._lock:
            self._rates = rates
            self._random_on = rates.any
            self._rng = random.Random(seed)

    @property
    def rates(self) -> FaultRates:
        return self._rates

    def next_call(self, stream: str, record_count: int) -> CallFaults:
        """Decide the faults of one call carrying ``record_count`` records."""
        # Lock-free fast path: no script, no rates, nothing to decide.
        if not self._script and not self._random_on:
            return NO_FAULTS
        with self._lock:
            for i, fault in enumerate(self._script):
                if fault.stream is None or fault.stream == stream:
                    del self._script[i]
                    return self._scripted(fault, record_count)
            if self._random_on:
                return self._random(record_count)
        return NO_FAULTS

    @staticmethod
    def _scripted(fault: Fault, record_count: int) -> CallFaults:
        if fault.kind is FaultKind.LATENCY:
            return CallFaults(latency=fault.seconds)
        if fault.kind is FaultKind.HTTP_ERROR:
            return CallFaults(outcome=fault.kind, http_status=fault.status, http_code=fault.code)
        if fault.kind is FaultKind.FAIL_RECORDS:
            if fault.indices is not None:
                chosen = set(fault.indices)
                hit = [i in chosen for i in range(record_count)]
            else:
                hit = _spread(record_count, fault.fraction)
            return CallFaults(record_errors=[fault.code if h else None for h in hit])
        return CallFaults(outcome=fault.kind)

    def _random(self, record_count: int) -> CallFaults:
        rates, rng = self._rates, self._rng
        latency = rates.latency_seconds if rng.random() < rates.latency else 0.0
        u = rng.random()
        outcome: FaultKind | None = None
        status, code = 500, INTERNAL_FAILURE
        if u < (edge := rates.reset_before_store):
            outcome = FaultKind.RESET_BEFORE_STORE
        elif u < (edge := edge + rates.http_500):
            outcome = FaultKind.HTTP_ERROR
        elif u < (edge := edge + rates.http_503):
            outcome, status, code = FaultKind.HTTP_ERROR, 503, SERVICE_UNAVAILABLE
        elif u < edge + rates.reset_after_store:
            outcome = FaultKind.RESET_AFTER_STORE
        record_errors: list[str | None] | None = None
        su, inf = rates.record_service_unavailable, rates.record_internal_failure
        if su or inf:
            record_errors = []
            for _ in range(record_count):
                r = rng.random()
                record_errors.append(
                    SERVICE_UNAVAILABLE if r < su else INTERNAL_FAILURE if r < su + inf else None
                )
        return CallFaults(latency, outcome, status, code, record_errors)
