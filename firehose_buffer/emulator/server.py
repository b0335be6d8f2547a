"""``LocalFirehose``: the emulator's lifecycle and in-process API."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from firehose_buffer._core.compression import decompress_object, sniff
from firehose_buffer.quota import Quota

from .control import ControlApi
from .delivery import Delivery
from .faults import Fault, FaultInjector, FaultRates
from .handler import EmulatorHTTPServer
from .service import FirehoseService
from .sigv4 import DEFAULT_CREDENTIALS
from .stats import Stats
from .throttle import Clock
from .tls import Certificates, require_trustme

DEFAULT_BUFFER_BYTES = 5 * 1024 * 1024
# Firehose's default is 300 s (60 s minimum is common); tests want files sooner.
DEFAULT_BUFFER_SECONDS = 1.0


class LocalFirehose:
    """A local Amazon Data Firehose on 127.0.0.1 for botocore, the AWS CLI and tests.

    ``with LocalFirehose(streams=["a"]) as fh:`` starts it; point clients at
    ``fh.endpoint_url``. ``data_dir=None`` delivers into a temporary directory that
    :meth:`stop` removes. ``keep_records=True`` also keeps every accepted record in memory
    for :meth:`accepted_records`; it is off by default because at the emulator's design
    throughput (tens of MB/s) that memory grows by gigabytes a minute, and the delivered files
    hold the same bytes. ``clock`` (monotonic seconds) drives the quota buckets; pass a fake
    one to make throttling exact in tests.

    Every API request's SigV4 signature is checked against the bytes received, as AWS does:
    ``credentials`` maps the accepted access key ids to their secrets (default
    ``{"testing": "testing"}``, the fake credentials tests use); ``verify_signatures=False``
    accepts any request. The control API (``/_emulator/``) is never checked.

    ``tls=True`` serves HTTPS (the control API too) with a certificate for 127.0.0.1 and
    localhost signed by a CA made at :meth:`start` and thrown away at :meth:`stop`; clients
    trust it through :attr:`ca_file` (``AWS_CA_BUNDLE``, ``verify=`` for boto3). It needs
    the ``trustme`` package (``pip install 'firehose-buffer[emulator-tls]'``): without it the
    constructor raises ConfigurationError.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        quota: Quota = Quota.STANDARD,
        streams: Iterable[str] = (),
        fault_rates: FaultRates | None = None,
        seed: int | None = None,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        buffer_seconds: float = DEFAULT_BUFFER_SECONDS,
        keep_records: bool = False,
        clock: Clock = time.monotonic,
        region: str = "us-east-1",
        verify_signatures: bool = True,
        credentials: Mapping[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        if tls:
            require_trustme()  # here, not at start(): a missing extra is a setup error
        self._tls = tls
        self._certificates: Certificates | None = None
        self._host = host
        self._credentials: Mapping[str, str] | None = None
        if verify_signatures:
            self._credentials = dict(DEFAULT_CREDENTIALS if credentials is None else credentials)
        self._requested_port = port
        self._temp_dir = data_dir is None
        # A temporary data_dir is made at start(), so an emulator never started leaves nothing.
        self._data_dir = Path() if data_dir is None else Path(data_dir)
        self._stopping = threading.Event()
        self._delivery = Delivery(self._data_dir, buffer_bytes, buffer_seconds, keep_records)
        self._faults = FaultInjector(fault_rates, seed)
        self._service = FirehoseService(
            quota=quota, delivery=self._delivery, faults=self._faults, clock=clock,
            region=region, stopping=self._stopping,
        )
        for name in streams:
            self._service.create_stream(name)
        self._server: EmulatorHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LocalFirehose:
        """Bind, start serving and delivering; returns self."""
        if self._server is not None or self._stopped:
            raise RuntimeError("a LocalFirehose starts once")
        certificates = Certificates(self._host) if self._tls else None
        # Bind first: if the port is taken, nothing has been started or created yet.
        try:
            self._server = EmulatorHTTPServer(
                (self._host, self._requested_port), self._service, ControlApi(self._service),
                self._credentials, None if certificates is None else certificates.context,
            )
        except BaseException:
            if certificates is not None:
                certificates.remove()
            raise
        self._certificates = certificates
        if self._temp_dir:
            self._data_dir = Path(tempfile.mkdtemp(prefix="firehose-emulator-"))
            self._delivery.data_dir = self._data_dir
        self._delivery.start()
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="firehose-emulator-http", daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every thread, write pending records; idempotent.

        Open client connections are cut and in-flight latency faults end early. With
        ``data_dir=None`` the delivered files are removed too, so read them before.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
        if self._serve_thread is not None:
            self._serve_thread.join()
        self._delivery.stop()
        if self._certificates is not None:
            self._certificates.remove()
        if self._temp_dir and self._server is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> LocalFirehose:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where it is ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.server_address[1])

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with ``tls=True``), for
        ``boto3.client(..., endpoint_url=...)``."""
        return f"{'https' if self._tls else 'http'}://{self._host}:{self.port}"

    @property
    def ca_file(self) -> str | None:
        """With ``tls=True``, the path of the PEM file of the CA that signed the emulator's
        certificate (it exists from start to stop); None without TLS."""
        if not self._tls:
            return None
        if self._certificates is None:
            raise RuntimeError("the CA is made at start()")
        return str(self._certificates.ca_file)

    @property
    def data_dir(self) -> Path:
        """Where delivered files go (a temporary one exists only between start and stop)."""
        if self._temp_dir and self._server is None:
            raise RuntimeError("the temporary data_dir is made at start()")
        return self._data_dir

    def client(self, **kwargs: Any) -> Any:
        """A boto3 Firehose client for this emulator with credentials it accepts.

        ``kwargs`` go to ``boto3.client`` (e.g. ``config=Config(retries=...)``); with TLS,
        ``verify`` defaults to :attr:`ca_file`.
        """
        import boto3  # noqa: PLC0415  (only callers who want a client pay for boto3)

        key, secret = next(iter((self._credentials or DEFAULT_CREDENTIALS).items()))
        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region_name": "us-east-1",
            "aws_access_key_id": key,
            "aws_secret_access_key": secret,
        }
        if self._tls:
            options["verify"] = self.ca_file
        options.update(kwargs)
        return boto3.client("firehose", **options)

    # -- streams and quotas -------------------------------------------------------------------

    def create_stream(
        self, name: str, quota: Quota | None = None, *, file_extension: str | None = None
    ) -> str:
        """Create a Direct PUT stream (own ``quota``, else the default); returns its ARN.

        ``file_extension`` ends its delivered files' names, as the S3 destination's
        ``FileExtension`` does (``".jsonl.zst"`` for zstd-compressed records).
        """
        config = None if file_extension is None else {
            "ExtendedS3DestinationConfiguration": {"FileExtension": file_extension}
        }
        return self._service.create_stream(name, quota, config)

    def delete_stream(self, name: str) -> None:
        self._service.delete_stream(name)

    def streams(self) -> list[str]:
        return self._service.stream_names()

    def set_quota(self, quota: Quota, stream: str | None = None) -> None:
        """Set one stream's quota, or the default (for every stream without its own)."""
        self._service.set_quota(quota, stream)

    # -- faults ---------------------------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue faults; each is consumed by the next matching put call, in order."""
        self._faults.script(faults)

    def clear_faults(self) -> None:
        """Drop queued faults and turn random faults off."""
        self._faults.clear_script()
        self._faults.set_rates(FaultRates())

    @property
    def pending_faults(self) -> int:
        return self._faults.pending

    def set_fault_rates(self, rates: FaultRates, seed: int | None = None) -> None:
        """Replace the random fault rates and reseed their generator."""
        self._faults.set_rates(rates, seed)

    # -- what happened --------------------------------------------------------------------------

    def stats(self, stream: str | None = None) -> Stats:
        """Counters of ``stream`` (KeyError if never created), or of all streams summed."""
        return self._service.stats(stream)

    def flush_delivery(self) -> None:
        """Write every pending record to files now."""
        self._delivery.flush()

    def delivered_files(self, stream: str) -> list[Path]:
        """``stream``'s delivered files in the order written (pending records not flushed)."""
        return self._delivery.files(stream)

    def delivered_bytes(self, stream: str) -> bytes:
        """Flush, then the concatenation of every delivered file of ``stream``, as stored
        (compressed files stay compressed)."""
        self.flush_delivery()
        return b"".join(p.read_bytes() for p in self._delivery.files(stream))

    def delivered_lines(self, stream: str) -> list[bytes]:
        """Flush, then every newline-separated line of ``stream``'s files, in order.

        A file that starts with zstd's or gzip's magic bytes is decoded whole first, every
        frame or member of it (one per compressed record).
        """
        self.flush_delivery()
        lines: list[bytes] = []
        for path in self._delivery.files(stream):
            data = path.read_bytes()
            if sniff(data) is not None:
                data = decompress_object(data)
            if data:
                lines.extend(data[:-1].split(b"\n") if data.endswith(b"\n") else data.split(b"\n"))
        return lines

    def accepted_records(self, stream: str) -> list[bytes]:
        """Every record accepted for ``stream``, in order; needs ``keep_records=True``."""
        return self._delivery.records(stream)
