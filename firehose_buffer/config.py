"""The one frozen, validated configuration object, and how to read it from the environment."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ._service.firehose import FIREHOSE
from .errors import ConfigurationError
from .quota import Quota

OnFull = Literal["block", "drop", "raise", "spill"]
Compression = Literal["zstd", "gzip"]
Event = Mapping[str, Any] | bytes
#: Chooses a stream for an event: an index into ``streams`` or a stream name.
Router = Callable[[Event], "int | str"]
#: Receives the events (encoded lines without their newline) that could not be delivered.
FailureCallback = Callable[[list[bytes], str], None]

ENV_PREFIX = "FIREHOSE_BUFFER_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_STREAM_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class BufferConfig:
    """How a :class:`~firehose_buffer.FirehoseBuffer` packs, routes, paces and retries.

    Every field except the callables can also be set from the environment by
    :meth:`from_env` as ``FIREHOSE_BUFFER_<FIELD NAME IN CAPITALS>``.
    """

    #: The delivery streams ("shards") events are spread across.
    streams: tuple[str, ...]
    #: Event field whose value picks the stream by a stable hash; ``None`` is keyless (sticky).
    partition_key: str | None = None
    #: Full control over routing; exclusive with ``partition_key``.
    router: Router | None = None
    #: No event waits in memory longer than this before its record is sent (quotas permitting).
    linger_seconds: float = 1.0
    #: Largest record, newline included (Firehose's limit, 1,024,000 bytes, is the most);
    #: with compression, the largest compressed record.
    max_record_bytes: int = FIREHOSE.max_record_bytes
    #: Lines per record (dynamic partitioning deaggregates at most 500 from one record);
    #: compressed records are not limited by it (nothing can deaggregate them).
    max_events_per_record: int = FIREHOSE.max_events_per_record
    #: Records per PutRecordBatch call (Firehose's limit, 500, is the most).
    max_batch_records: int = FIREHOSE.max_batch_records
    #: Record bytes per PutRecordBatch call (Firehose's limit, 4 MiB, is the most).
    max_batch_bytes: int = FIREHOSE.max_batch_bytes
    #: Each stream's Direct PUT quota; ``Quota.HIGH`` for us-east-1, us-west-2, eu-west-1.
    quota: Quota = Quota.STANDARD
    #: Fraction of the quota this producer may use (lower it when other producers share streams).
    quota_share: float = 1.0
    #: Records still undelivered this long after their first event was put are failed.
    record_ttl_seconds: float = 600.0
    #: A failed record waits a random time (full jitter) up to this before its first resend;
    #: the bound doubles with each retry.
    retry_initial_backoff_seconds: float = 0.1
    #: Largest bound of that random wait.
    retry_max_backoff_seconds: float = 10.0
    #: Bound on everything held in memory: buffered lines, records waiting, in flight and retried.
    max_buffer_bytes: int = 64 * 1024 * 1024
    #: When max_buffer_bytes is reached: "block" put() up to max_block_seconds, then raise
    #: BufferFullError; "drop" the event (put() returns False, counted in events_dropped);
    #: "raise" BufferFullError at once; "spill" it to spool_dir (put() returns True; counted
    #: as failed, reason "buffer_full", and spooled; replayed by the next run).
    on_full: OnFull = "block"
    #: How long put() may wait for room when ``on_full="block"``.
    max_block_seconds: float = 1.0
    #: close() at interpreter exit waits at most this long.
    exit_timeout_seconds: float = 5.0
    #: Receives events that could not be delivered and were not kept in the spool.
    on_failure: FailureCallback | None = None
    #: Directory (created 0700) where undeliverable events are kept as JSON Lines (files 0600):
    #: expired, rejected, still unsent when close() or exit gives up, spilled when full. A
    #: buffer re-sends what earlier runs left there, alongside new events. Off when None.
    spool_dir: str | None = None
    #: Send every record as one complete zstd frame or gzip member of whole JSON lines
    #: (``"zstd"`` needs ``firehose-buffer[zstd]`` before Python 3.14). Firehose bills and
    #: caps the compressed bytes; its S3 objects become ``.jsonl.zst``/``.jsonl.gz`` files.
    #: Rules out dynamic partitioning, format conversion, Lambda processors and non-S3
    #: destinations (Firehose cannot decompress records). ``None``: plain JSON Lines.
    compression: Compression | None = None
    #: The codec's level; ``None``: zstd 3, gzip 1 (measured: the best bill per CPU).
    compression_level: int | None = None
    #: Keep what put() accepted in files under ``spool_dir`` (pre-allocated, mapped shared)
    #: instead of anonymous memory, so that it survives any death of the process (SIGKILL,
    #: the OOM killer, a segfault, a worker timeout) and is delivered by the next buffer using
    #: the same ``spool_dir``, or ``firehose-buffer replay``; not a power loss. Needs
    #: ``spool_dir`` on a local file system; put() costs what it costs without it.
    durable: bool = False
    #: Put a unique, time-ordered id (a UUIDv7 string) into every mapping event that has no
    #: field of this name, so that consumers can deduplicate (a lost answer makes the buffer
    #: send a batch again). Bytes events are sent as they are. ``None``: no ids.
    event_id_field: str | None = None
    #: Concurrent PutRecordBatch calls (at most one per stream); ``None``: one per stream, max 16.
    max_concurrent_requests: int | None = None
    #: Region of the client the buffer makes itself; ``None``: the AWS environment's
    #: (``AWS_DEFAULT_REGION``, or the region of the AWS config profile).
    region: str | None = None
    #: Endpoint of the client the buffer makes itself; ``None``: the AWS environment's
    #: (``AWS_ENDPOINT_URL_FIREHOSE``, ``AWS_ENDPOINT_URL``), else the region's.
    endpoint_url: str | None = None
    #: Seconds to open a connection, for the client the buffer makes itself. The timeout
    #: defaults nest (connect 2 <= read 3 <= call 3 < exit 5 < flush 10): one call that hangs
    #: or trickles its answer is cut off and retried within a default flush() or exit.
    connect_timeout_seconds: float = 2.0
    #: Seconds to wait for each read of an answer, for the client the buffer makes itself.
    read_timeout_seconds: float = 3.0
    #: Bound on one PutRecordBatch call as a whole (connect, send, wait, read); enforced for
    #: the client the buffer makes itself, botocore clients bound each socket read only.
    call_timeout_seconds: float = 3.0
    #: Proxies for the client the buffer makes itself, by URL scheme, as botocore's
    #: ``Config(proxies=...)``: ``{"https": "http://user:password@proxy:3128"}``. ``None``
    #: takes them from ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``; given (``{}`` too),
    #: it replaces the environment's.
    proxies: Mapping[str, str] | None = None

    # Derived, not settable.
    record_target_bytes: int = field(init=False)
    batch_target_bytes: int = field(init=False)
    concurrency: int = field(init=False)
    #: The longest encoded event with its newline: one record's worth.
    max_line_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        streams = self.streams
        if isinstance(streams, str) or not isinstance(streams, Sequence):
            raise ConfigurationError("streams must be a sequence of delivery stream names")
        streams = tuple(streams)
        object.__setattr__(self, "streams", streams)
        if not streams:
            raise ConfigurationError("streams must name at least one delivery stream")
        for name in streams:
            if not isinstance(name, str) or not _STREAM_NAME.match(name):
                raise ConfigurationError(
                    f"invalid delivery stream name {name!r}: 1-64 of [a-zA-Z0-9_.-]"
                )
        if len(set(streams)) != len(streams):
            raise ConfigurationError(f"streams has duplicates: {streams!r}")
        if self.partition_key is not None and self.router is not None:
            raise ConfigurationError("give partition_key or router, not both")
        if self.partition_key is not None and not isinstance(self.partition_key, str):
            raise ConfigurationError("partition_key must be a field name (str)")
        if self.event_id_field is not None and (
                not isinstance(self.event_id_field, str) or not self.event_id_field):
            raise ConfigurationError("event_id_field must be a field name (str)")
        if self.router is not None and not callable(self.router):
            raise ConfigurationError("router must be callable")
        if self.on_failure is not None and not callable(self.on_failure):
            raise ConfigurationError("on_failure must be callable")
        if self.on_full not in get_args(OnFull):
            raise ConfigurationError(
                f"on_full must be one of {get_args(OnFull)}, not {self.on_full!r}"
            )
        if self.spool_dir is not None:
            if not isinstance(self.spool_dir, str | os.PathLike) or not os.fspath(self.spool_dir):
                raise ConfigurationError("spool_dir must be a directory path")
            object.__setattr__(self, "spool_dir", os.fspath(self.spool_dir))
        if not isinstance(self.durable, bool):
            raise ConfigurationError("durable must be True or False")
        if self.durable and self.spool_dir is None:
            raise ConfigurationError("durable=True needs a spool_dir to keep the segments in")
        if self.on_full == "spill" and self.spool_dir is None:
            raise ConfigurationError('on_full="spill" needs a spool_dir to spill to')
        if self.proxies is not None:
            if not isinstance(self.proxies, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in self.proxies.items()):
                raise ConfigurationError(
                    'proxies must map URL schemes to proxy URLs, e.g. {"https": '
                    '"http://proxy:3128"}; from the environment, set HTTPS_PROXY')
            object.__setattr__(self, "proxies", dict(self.proxies))  # a copy of its own
        if not isinstance(self.quota, Quota):
            raise ConfigurationError("quota must be a firehose_buffer.Quota")
        if self.compression is not None or self.compression_level is not None:
            from ._core.compression import resolve_level, zstd_module  # noqa: PLC0415

            if self.compression is None:
                raise ConfigurationError("compression_level needs a compression")
            object.__setattr__(self, "compression_level",
                               resolve_level(self.compression, self.compression_level))
            if self.compression == "zstd":
                zstd_module()  # a clear ConfigurationError now, not at the first record
        _bounded("max_record_bytes", self.max_record_bytes, 1, FIREHOSE.max_record_bytes)
        _bounded("max_events_per_record", self.max_events_per_record, 1, 10**9)
        _bounded("max_batch_records", self.max_batch_records, 1, FIREHOSE.max_batch_records)
        _bounded("max_batch_bytes", self.max_batch_bytes, self.max_record_bytes,
                 FIREHOSE.max_batch_bytes)
        _bounded("max_buffer_bytes", self.max_buffer_bytes, self.max_record_bytes, 2**62)
        if self.max_concurrent_requests is not None:
            _bounded("max_concurrent_requests", self.max_concurrent_requests, 1, 1024)
        for name in ("linger_seconds", "record_ttl_seconds", "retry_initial_backoff_seconds",
                     "retry_max_backoff_seconds", "connect_timeout_seconds",
                     "read_timeout_seconds", "call_timeout_seconds", "quota_share"):
            _positive(name, getattr(self, name))
        for name in ("max_block_seconds", "exit_timeout_seconds"):
            _positive(name, getattr(self, name), allow_zero=True)
        if self.quota_share > 1:
            raise ConfigurationError("quota_share is a fraction of the quota: at most 1")
        if self.retry_max_backoff_seconds < self.retry_initial_backoff_seconds:
            raise ConfigurationError("retry_max_backoff_seconds < retry_initial_backoff_seconds")
        # A request larger than half a second of the byte quota could not be paced smoothly: the
        # service's own budget (inferred: about one second of quota) would have no room for
        # timing jitter between our clock and its. So records and batches are cut smaller.
        half_second = int(self.quota.bytes_per_second * self.quota_share / 2)
        batch_target = max(1, min(self.max_batch_bytes, half_second))
        object.__setattr__(self, "batch_target_bytes", batch_target)
        object.__setattr__(self, "record_target_bytes", min(self.max_record_bytes, batch_target))
        object.__setattr__(self, "max_line_bytes", self.max_record_bytes)
        concurrency = self.max_concurrent_requests or min(len(streams), 16)
        object.__setattr__(self, "concurrency", min(concurrency, len(streams)))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> BufferConfig:
        """Read ``FIREHOSE_BUFFER_*`` variables; keyword arguments take precedence.

        Streams come from ``FIREHOSE_BUFFER_STREAMS="a,b"`` or from ``FIREHOSE_BUFFER_STREAM=base``
        with ``FIREHOSE_BUFFER_SHARDS=N`` (``base-0`` .. ``base-(N-1)``). The quota from
        ``FIREHOSE_BUFFER_QUOTA=standard|high``, each part overridable by
        ``FIREHOSE_BUFFER_REQUESTS_PER_SECOND``, ``..._BYTES_PER_SECOND``,
        ``..._RECORDS_PER_SECOND``.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        streams = _streams_from_env(env)
        if streams is not None:
            values["streams"] = streams
        quota = quota_from_env(env)
        if quota is not None:
            values["quota"] = quota
        for f in dataclasses.fields(cls):
            if not f.init or f.name in ("streams", "quota", "router", "on_failure"):
                continue
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f.name, str(f.type), raw)
        values.update(overrides)
        if "streams" not in values:
            raise ConfigurationError(
                "no delivery streams: set FIREHOSE_BUFFER_STREAMS=a,b or "
                "FIREHOSE_BUFFER_STREAM=base with FIREHOSE_BUFFER_SHARDS=N"
            )
        return cls(**values)


def sharded_stream_names(base: str, shards: int) -> tuple[str, ...]:
    """The names ``base-0`` .. ``base-(shards-1)`` used for N sharded streams."""
    if shards < 1:
        raise ConfigurationError("shards must be at least 1")
    return tuple(f"{base}-{i}" for i in range(shards))


def _streams_from_env(env: Mapping[str, str]) -> tuple[str, ...] | None:
    listed = env.get(ENV_PREFIX + "STREAMS", "").strip()
    base = env.get(ENV_PREFIX + "STREAM", "").strip()
    if listed and base:
        raise ConfigurationError("set FIREHOSE_BUFFER_STREAMS or FIREHOSE_BUFFER_STREAM, not both")
    if listed:
        return tuple(s.strip() for s in listed.split(",") if s.strip())
    if base:
        shards = env.get(ENV_PREFIX + "SHARDS", "").strip()
        if not shards:
            return (base,)
        return sharded_stream_names(base, _parse("shards", "int", shards))
    return None


def quota_from_env(env: Mapping[str, str]) -> Quota | None:
    """``FIREHOSE_BUFFER_QUOTA`` and its per-part overrides, or None when none is set."""
    preset = env.get(ENV_PREFIX + "QUOTA", "").strip()
    try:
        quota = Quota.named(preset) if preset else Quota.STANDARD
    except ValueError as exc:
        raise ConfigurationError(f"{ENV_PREFIX}QUOTA: {exc}") from None
    parts = {}
    for name in ("requests_per_second", "bytes_per_second", "records_per_second"):
        raw = env.get(ENV_PREFIX + name.upper(), "").strip()
        if raw:
            parts[name] = _parse(name, "float", raw)
    if not preset and not parts:
        return None
    try:
        return dataclasses.replace(quota, **parts)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _parse(name: str, annotation: str, raw: str) -> Any:
    text = raw.strip()
    try:
        if annotation.startswith("int"):
            return int(text.replace("_", ""))
        if annotation.startswith("float"):
            return float(text)
    except ValueError:
        raise ConfigurationError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number"
        ) from None
    if annotation.startswith("bool"):
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigurationError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a boolean (true/false, 1/0, yes/no, "
            "on/off)")
    if annotation.startswith("tuple"):
        return tuple(s.strip() for s in text.split(",") if s.strip())
    return text


def _bounded(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        sign = "non-negative" if allow_zero else "positive"
        raise ConfigurationError(f"{name} must be a finite {sign} number, got {value!r}")
