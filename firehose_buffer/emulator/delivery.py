"""Delivery of accepted records to files laid out like Firehose's S3 objects.

Records' ``Data`` bytes are concatenated as-is (Firehose adds no delimiter) into one buffer
per stream. A buffer becomes a file when it reaches ``buffer_bytes`` or is ``buffer_seconds``
old (Firehose's BufferingHints), on :meth:`Delivery.flush`, and at stop. Files are named like
Firehose's default S3 keys, by the UTC time of the buffer's first record::

    <data_dir>/<stream>/YYYY/MM/DD/HH/<stream>-1-YYYY-MM-DD-HH-MM-SS-<uuid4><extension>

``<extension>`` is the stream's ``FileExtension`` (``ExtendedS3DestinationConfiguration``;
empty by default, as Firehose writes no extension for uncompressed delivery): ``.jsonl.zst``
or ``.jsonl.gz`` for streams receiving compressed records, whose files are then multi-frame
zstd or multi-member gzip objects exactly as received.

One writer thread writes them in the order the buffers were closed, each to a temporary file
under ``<data_dir>/.emulator-incoming/`` renamed into place, so a reader never sees a partial
file. There is no fsync: the atomicity is for concurrent readers, not for crashes.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

INCOMING_DIR = ".emulator-incoming"


@dataclass(slots=True)
class _Buffer:
    """One stream's records accepted and not yet written to a delivered file (Firehose's
    buffering hints), under the delivery's condition lock."""

    stream: str
    opened_wall: float
    opened_mono: float
    extension: str
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


class Delivery:
    """Buffers accepted records per stream and writes them out on a background thread."""

    def __init__(
        self, data_dir: Path, buffer_bytes: int, buffer_seconds: float, keep_records: bool = False
    ) -> None:
        if buffer_bytes <= 0 or buffer_seconds <= 0:
            raise ValueError("buffer_bytes and buffer_seconds must be positive")
        self.data_dir = data_dir
        self.buffer_bytes = buffer_bytes
        self.buffer_seconds = buffer_seconds
        self.keep_records = keep_records
        self._records: dict[str, list[bytes]] = {}
        self._extensions: dict[str, str] = {}
        self._cond = threading.Condition()
        self._open: dict[str, _Buffer] = {}
        self._closed: deque[_Buffer] = deque()
        self._enqueued = 0
        self._written = 0
        self._files: dict[str, list[Path]] = {}
        self._error: BaseException | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        (self.data_dir / INCOMING_DIR).mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(
            target=self._run, name="firehose-emulator-delivery", daemon=True
        )
        self._thread.start()

    def set_extension(self, stream: str, extension: str) -> None:
        """Name ``stream``'s files from now on with ``extension`` (``""``: none)."""
        with self._cond:
            if extension:
                self._extensions[stream] = extension
            else:
                self._extensions.pop(stream, None)

    def append(self, stream: str, chunks: list[bytes], size: int) -> None:
        """Add one call's accepted records, in order, to ``stream``'s buffer."""
        with self._cond:
            buf = self._open.get(stream)
            if buf is None:
                buf = self._open[stream] = _Buffer(
                    stream, time.time(), time.monotonic(), self._extensions.get(stream, "")
                )
                self._cond.notify()  # the writer's next deadline may now be earlier
            buf.chunks.extend(chunks)
            if self.keep_records:
                self._records.setdefault(stream, []).extend(chunks)
            buf.size += size
            if buf.size >= self.buffer_bytes:
                self._close_locked(stream)
                self._cond.notify()

    def flush(self, stream: str | None = None) -> None:
        """Write every pending record (of ``stream``, or all) and wait until they are files."""
        with self._cond:
            for name in [stream] if stream is not None else list(self._open):
                if name in self._open:
                    self._close_locked(name)
            target = self._enqueued
            if self._thread is None or not self._thread.is_alive():
                # Not running (not started, or stopped): write in the caller's thread.
                while self._closed:
                    self._write(self._closed.popleft())
                    self._written += 1
            else:
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._written >= target or self._error is not None)
            if self._error is not None:
                raise RuntimeError(f"emulator delivery failed: {self._error!r}") from self._error

    def files(self, stream: str) -> list[Path]:
        """The files written for ``stream`` by this emulator, in the order written."""
        with self._cond:
            return list(self._files.get(stream, ()))

    def records(self, stream: str) -> list[bytes]:
        """Every record accepted for ``stream``, in order (only with ``keep_records``)."""
        if not self.keep_records:
            raise RuntimeError("accepted records are only kept with keep_records=True")
        with self._cond:
            return list(self._records.get(stream, ()))

    def stop(self) -> None:
        """Write everything pending, then end the writer thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    def _close_locked(self, stream: str) -> None:
        self._closed.append(self._open.pop(stream))
        self._enqueued += 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._stopping:
                    now = time.monotonic()
                    for buf in list(self._open.values()):
                        if now - buf.opened_mono >= self.buffer_seconds:
                            self._close_locked(buf.stream)
                    if self._closed:
                        break
                    deadlines = [b.opened_mono + self.buffer_seconds for b in self._open.values()]
                    self._cond.wait(timeout=(min(deadlines) - now) if deadlines else None)
                if self._stopping:
                    for name in list(self._open):
                        self._close_locked(name)
                if not self._closed:
                    return
                buf = self._closed.popleft()
            try:
                self._write(buf)
            except OSError as exc:
                with self._cond:
                    self._error = exc
            with self._cond:
                self._written += 1
                self._cond.notify_all()

    def _write(self, buf: _Buffer) -> None:
        stamp = time.gmtime(buf.opened_wall)
        folder = self.data_dir / buf.stream / time.strftime("%Y/%m/%d/%H", stamp)
        name = (f"{buf.stream}-1-{time.strftime('%Y-%m-%d-%H-%M-%S', stamp)}-{uuid.uuid4()}"
                f"{buf.extension}")
        folder.mkdir(parents=True, exist_ok=True)
        temp = self.data_dir / INCOMING_DIR / f"{name}.tmp"
        with open(temp, "wb") as f:
            f.writelines(buf.chunks)
        final = folder / name
        os.replace(temp, final)
        with self._cond:
            self._files.setdefault(buf.stream, []).append(final)
