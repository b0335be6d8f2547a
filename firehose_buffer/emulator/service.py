"""Firehose's API semantics, independent of HTTP: streams, limits, quota, faults, storage.

:meth:`FirehoseService.handle` takes the ``X-Amz-Target`` operation name and the JSON body and
returns a :class:`Response` (or raises :class:`ApiError`, which the HTTP layer turns into
``{"__type": code, "message": ...}``). Error codes and messages follow what the real service
returns as seen by botocore and in public client logs.
"""

from __future__ import annotations

import binascii
import itertools
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from firehose_buffer.quota import Quota

from .._service.firehose import FIREHOSE
from .delivery import Delivery
from .faults import (
    INTERNAL_FAILURE,
    NO_FAULTS,
    RECORD_ERROR_MESSAGES,
    SERVICE_UNAVAILABLE,
    FaultInjector,
    FaultKind,
)
from .stats import Stats, StreamCounters, total
from .throttle import Clock, StreamThrottle

TARGET_PREFIX = "Firehose_20150804."
ACCOUNT_ID = "123456789012"
SLOW_DOWN = "Slow down."
_STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,64}")
# ExtendedS3DestinationConfiguration.FileExtension, as botocore's service model has it.
_FILE_EXTENSION = re.compile(r"^$|\.[0-9a-z!\-_.*'()]+")
_FILE_EXTENSION_MAX = 128
_THROTTLED_ENTRY = {"ErrorCode": SERVICE_UNAVAILABLE, "ErrorMessage": SLOW_DOWN}
_FAULT_ENTRIES = {
    code: {"ErrorCode": code, "ErrorMessage": message}
    for code, message in RECORD_ERROR_MESSAGES.items()
}


class ApiError(Exception):
    """A whole-call error: HTTP ``status`` with body ``{"__type": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return orjson.dumps({"__type": self.code, "message": self.message})


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP 200 body, or ``reset=True``: abort the connection with a RST, answer nothing."""

    body: bytes = b"{}"
    reset: bool = False


RESET = Response(reset=True)


def _invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidArgumentException", message)


class _Stream:
    """One delivery stream of the emulator: its name, ARN and configuration, its throttle and
    counters; owned by :class:`FirehoseService`, under its lock."""

    __slots__ = ("arn", "config", "counters", "created", "name", "own_quota", "throttle", "type")

    def __init__(
        self, name: str, arn: str, config: dict[str, Any], *, throttle: StreamThrottle,
        counters: StreamCounters, own_quota: bool,
    ) -> None:
        self.name = name
        self.arn = arn
        self.config = config
        self.type = str(config.get("DeliveryStreamType") or "DirectPut")
        self.created = time.time()
        self.throttle = throttle
        self.counters = counters
        self.own_quota = own_quota


class FirehoseService:
    """All delivery streams of one emulator and the operations on them; thread-safe."""

    def __init__(
        self,
        *,
        quota: Quota,
        delivery: Delivery,
        faults: FaultInjector,
        clock: Clock = time.monotonic,
        region: str = "us-east-1",
        stopping: threading.Event | None = None,
    ) -> None:
        self.default_quota = quota
        self.delivery = delivery
        self.faults = faults
        self.region = region
        self._clock = clock
        self._stopping = stopping or threading.Event()
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        # Stats outlive a deleted stream so a test can still read them.
        self._counters: dict[str, StreamCounters] = {}
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count(1)
        self._ops: dict[str, Callable[[dict[str, Any]], Response]] = {
            "CreateDeliveryStream": self._create,
            "DescribeDeliveryStream": self._describe,
            "ListDeliveryStreams": self._list,
            "DeleteDeliveryStream": self._delete,
            "PutRecord": self._put_record,
            "PutRecordBatch": self._put_record_batch,
        }

    # -- management used by LocalFirehose and the control endpoint --------------------------

    def create_stream(
        self, name: str, quota: Quota | None = None, config: dict[str, Any] | None = None
    ) -> str:
        """Create ``name`` (ResourceInUseException if it exists); returns its ARN."""
        if not _STREAM_NAME.fullmatch(name) or name in (".", ".."):
            raise _invalid(
                f"1 validation error detected: Value '{name}' at 'deliveryStreamName' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern: "
                "[a-zA-Z0-9_.-]+"
            )
        arn = f"arn:aws:firehose:{self.region}:{ACCOUNT_ID}:deliverystream/{name}"
        extension = _file_extension(config or {})
        with self._lock:
            if name in self._streams:
                raise ApiError(
                    400, "ResourceInUseException",
                    f"Firehose {name} under accountId {ACCOUNT_ID} already exists",
                )
            counters = self._counters.setdefault(name, StreamCounters())
            throttle = StreamThrottle(quota or self.default_quota, self._clock)
            self._streams[name] = _Stream(
                name, arn, dict(config or {}), throttle=throttle, counters=counters,
                own_quota=quota is not None,
            )
            self.delivery.set_extension(name, extension)
        return arn

    def delete_stream(self, name: str) -> None:
        with self._lock:
            if self._streams.pop(name, None) is None:
                raise self._not_found(name)
        self.delivery.flush(name)

    def stream_names(self) -> list[str]:
        with self._lock:
            return sorted(self._streams)

    def set_quota(self, quota: Quota, stream: str | None = None) -> None:
        """Set one stream's quota, or the default and every stream without its own."""
        with self._lock:
            if stream is not None:
                target = self._get_locked(stream)
                target.own_quota = True
                target.throttle.set_quota(quota)
                return
            self.default_quota = quota
            for s in self._streams.values():
                if not s.own_quota:
                    s.throttle.set_quota(quota)

    def quota_of(self, stream: str) -> Quota:
        with self._lock:
            return self._get_locked(stream).throttle.quota

    def stats(self, stream: str | None = None) -> Stats:
        with self._lock:
            if stream is not None:
                counters = self._counters.get(stream)
                if counters is None:
                    raise KeyError(f"no delivery stream named {stream!r} was ever created")
                return counters.snapshot()
            everything = list(self._counters.values())
        return total(c.snapshot() for c in everything)

    # -- the wire API ----------------------------------------------------------------------

    def handle(self, target: str, body: bytes) -> Response:
        """Run one API call; raises :class:`ApiError` for an error response."""
        op = None
        if target.startswith(TARGET_PREFIX):
            op = self._ops.get(target[len(TARGET_PREFIX):])
        if op is None:
            # What Coral-based services answer; botocore keeps the part after '#'.
            raise ApiError(
                400, "com.amazon.coral.service#UnknownOperationException",
                f"Unknown operation {target!r}",
            )
        try:
            request = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            raise ApiError(400, "SerializationException", "Body is not valid JSON") from None
        if not isinstance(request, dict):
            raise ApiError(400, "SerializationException", "Request body must be a JSON object")
        return op(request)

    def _not_found(self, name: str) -> ApiError:
        message = f"Firehose {name} under account {ACCOUNT_ID} not found."
        return ApiError(400, "ResourceNotFoundException", message)

    def _get_locked(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            raise self._not_found(name)
        return stream

    def _stream(self, request: dict[str, Any]) -> _Stream:
        name = request.get("DeliveryStreamName")
        if not isinstance(name, str):
            raise _invalid("DeliveryStreamName is required")
        stream = self._streams.get(name)  # a plain dict read is atomic; no lock on the hot path
        if stream is None:
            raise self._not_found(name)
        return stream

    def _create(self, request: dict[str, Any]) -> Response:
        name = request.get("DeliveryStreamName")
        if not isinstance(name, str):
            raise _invalid("DeliveryStreamName is required")
        config = {k: v for k, v in request.items() if k != "DeliveryStreamName"}
        return Response(orjson.dumps({"DeliveryStreamARN": self.create_stream(name, None, config)}))

    def _describe(self, request: dict[str, Any]) -> Response:
        stream = self._stream(request)
        destinations: list[dict[str, Any]] = []
        for key, value in stream.config.items():
            # FooDestinationConfiguration is echoed as FooDestinationDescription; botocore
            # ignores members the description shape lacks.
            if key.endswith("DestinationConfiguration") and isinstance(value, dict):
                echoed = dict(value)
                if key in ("S3DestinationConfiguration", "ExtendedS3DestinationConfiguration"):
                    # The fields AWS fills in with defaults when the request omits them.
                    echoed.setdefault("BufferingHints", {"SizeInMBs": 5, "IntervalInSeconds": 300})
                    echoed.setdefault("CompressionFormat", "UNCOMPRESSED")
                    echoed.setdefault(
                        "EncryptionConfiguration", {"NoEncryptionConfig": "NoEncryption"}
                    )
                destinations.append({
                    "DestinationId": f"destinationId-{len(destinations) + 1:012d}",
                    key.replace("Configuration", "Description"): echoed,
                })
        description: dict[str, Any] = {
            "DeliveryStreamName": stream.name,
            "DeliveryStreamARN": stream.arn,
            "DeliveryStreamStatus": "ACTIVE",
            "DeliveryStreamType": stream.type,
            "VersionId": "1",
            "CreateTimestamp": stream.created,
            "Destinations": destinations,
            "HasMoreDestinations": False,
        }
        return Response(orjson.dumps({"DeliveryStreamDescription": description}))

    def _list(self, request: dict[str, Any]) -> Response:
        limit = int(request.get("Limit") or 10)
        start = request.get("ExclusiveStartDeliveryStreamName")
        wanted_type = request.get("DeliveryStreamType")
        with self._lock:
            names = sorted(
                s.name for s in self._streams.values()
                if wanted_type is None or s.type == wanted_type
            )
        if isinstance(start, str):
            names = [n for n in names if n > start]
        return Response(orjson.dumps({
            "DeliveryStreamNames": names[:limit],
            "HasMoreDeliveryStreams": len(names) > limit,
        }))

    def _delete(self, request: dict[str, Any]) -> Response:
        name = request.get("DeliveryStreamName")
        if not isinstance(name, str):
            raise _invalid("DeliveryStreamName is required")
        self.delete_stream(name)
        return Response(b"{}")

    # -- puts: the hot path -----------------------------------------------------------------

    def _put_record(self, request: dict[str, Any]) -> Response:
        stream = self._stream(request)
        record = request.get("Record")
        if not isinstance(record, dict):
            raise _invalid("Record is required")
        datas = _decode([record])
        return self._put(stream, datas, single=True)

    def _put_record_batch(self, request: dict[str, Any]) -> Response:
        stream = self._stream(request)
        records = request.get("Records")
        if not isinstance(records, list):
            raise _invalid("Records is required")
        if not records:
            raise _invalid(
                "1 validation error detected: Value '[]' at 'records' failed to satisfy "
                "constraint: Member must have length greater than or equal to 1"
            )
        if len(records) > FIREHOSE.max_batch_records:
            raise _invalid(
                "1 validation error detected: Value at 'records' failed to satisfy constraint: "
                f"Member must have length less than or equal to {FIREHOSE.max_batch_records}"
            )
        return self._put(stream, _decode(records), single=False)

    def _put(self, stream: _Stream, datas: list[bytes], *, single: bool) -> Response:
        sizes = [len(d) for d in datas]
        limit = FIREHOSE.max_record_bytes
        too_big = [i for i, size in enumerate(sizes) if size > limit]
        if too_big:
            problems = [
                f"Value 'java.nio.HeapByteBuffer[pos=0 lim={sizes[i]} cap={sizes[i]}]' at "
                f"'{'record' if single else f'records.{i + 1}.member'}.data' failed to satisfy "
                f"constraint: Member must have length less than or equal to {limit}"
                for i in too_big
            ]
            count = len(problems)
            raise _invalid(
                f"{count} validation error{'s' if count > 1 else ''} detected: "
                + "; ".join(problems)
            )
        total_bytes = sum(sizes)
        if total_bytes > FIREHOSE.max_batch_bytes:
            raise _invalid("Records size exceeds 4 MB limit")

        count = len(datas)
        counters = stream.counters
        plan = self.faults.next_call(stream.name, count)
        faults = plan.counts() if plan is not NO_FAULTS else None
        if plan.latency > 0:
            self._stopping.wait(plan.latency)
        if plan.outcome is FaultKind.HTTP_ERROR:
            counters.record_call(failed=count, faults=faults)
            message = SLOW_DOWN if plan.http_code == SERVICE_UNAVAILABLE else "Internal failure."
            raise ApiError(plan.http_status, plan.http_code, message)
        if plan.outcome is FaultKind.RESET_BEFORE_STORE:
            counters.record_call(failed=count, faults=faults)
            return RESET

        errors: list[str | None] | None = plan.record_errors
        admitted = stream.throttle.admit(sizes, total_bytes, errors)
        if admitted is None:
            counters.record_call(failed=count, throttled_request=True, faults=faults)
            raise ApiError(503, SERVICE_UNAVAILABLE, SLOW_DOWN)

        if errors is None and all(admitted):
            accepted, accepted_bytes = datas, total_bytes
            prefix, ids = self._id_prefix, self._ids
            entries: list[dict[str, Any]] = [
                {"RecordId": f"{prefix}{next(ids):016x}"} for _ in datas
            ]
        else:
            accepted, accepted_bytes, entries = [], 0, []
            for i, ok in enumerate(admitted):
                if ok:
                    accepted.append(datas[i])
                    accepted_bytes += sizes[i]
                    entries.append({"RecordId": f"{self._id_prefix}{next(self._ids):016x}"})
                elif errors is not None and (code := errors[i]) is not None:
                    entries.append(_FAULT_ENTRIES[code])
                else:
                    entries.append(_THROTTLED_ENTRY)
        failed = count - len(accepted)
        throttled = failed - (sum(e is not None for e in errors) if errors is not None else 0)
        counters.record_call(
            accepted=len(accepted), accepted_bytes=accepted_bytes, failed=failed,
            throttled_records=throttled, faults=faults,
        )
        if accepted:
            self.delivery.append(stream.name, accepted, accepted_bytes)
        if plan.outcome is FaultKind.RESET_AFTER_STORE:
            return RESET
        if single:
            entry = entries[0]
            if "RecordId" not in entry:
                code = entry["ErrorCode"]
                status = 500 if code == INTERNAL_FAILURE else 503
                raise ApiError(status, code, entry["ErrorMessage"])
            return Response(orjson.dumps({"RecordId": entry["RecordId"], "Encrypted": False}))
        return Response(orjson.dumps(
            {"Encrypted": False, "FailedPutCount": failed, "RequestResponses": entries}
        ))


def _file_extension(config: dict[str, Any]) -> str:
    """The ``FileExtension`` that names a stream's delivered files; checked like AWS does."""
    destination = config.get("ExtendedS3DestinationConfiguration")
    if not isinstance(destination, dict) or destination.get("FileExtension") is None:
        return ""
    extension = destination["FileExtension"]
    if not isinstance(extension, str):
        raise ApiError(400, "SerializationException", "FileExtension must be a string")
    if len(extension) > _FILE_EXTENSION_MAX or not _FILE_EXTENSION.fullmatch(extension):
        raise _invalid(
            f"1 validation error detected: Value '{extension}' at "
            "'extendedS3DestinationConfiguration.fileExtension' failed to satisfy constraint: "
            + (f"Member must have length less than or equal to {_FILE_EXTENSION_MAX}"
               if len(extension) > _FILE_EXTENSION_MAX else
               f"Member must satisfy regular expression pattern: {_FILE_EXTENSION.pattern}")
        )
    return extension


def _decode(records: list[Any]) -> list[bytes]:
    try:
        return [binascii.a2b_base64(r["Data"]) for r in records]
    except (KeyError, TypeError):
        raise ApiError(400, "SerializationException", "Every record needs a Data blob") from None
    except (binascii.Error, ValueError):
        raise ApiError(400, "SerializationException", "Data is not valid base64") from None
