"""The spool: events that could not be delivered, kept on local disk as JSON Lines.

Layout: ``<spool_dir>/<stream>/<time_ns>-<pid>-<random>.jsonl``, one event per line exactly as
it would have gone into a record, directories ``0700`` and files ``0600`` (events may hold
personal data). A file belongs to whoever holds an exclusive ``flock`` on it:

- a writer creates its file under a name the readers ignore (``.tmp``), locks it, then renames
  it into place, so no reader can ever claim a file that is still being written;
- a reader (the replay at start, ``firehose-buffer replay``) claims a file with a
  non-blocking ``flock``; a second process finds it locked and moves on, so two processes
  sharing a spool directory never send the same file twice. The kernel drops the lock when
  its holder dies, so a crashed process's files become claimable again.

Crash safety: a writer only appends whole lines with ``write(2)`` on an ``O_APPEND``
descriptor. A crash can tear at most the line being written, and only at the end of the file,
since a writer that sees a write fail truncates the file back to its last whole line and
starts a new file. Readers skip a last line that has no newline (it was being written).
Durability against power loss: failures are ``fsync``-ed as they are written; lines spilled by
``put()`` (``on_full="spill"``) are ``fsync``-ed when the file is closed (a process crash does
not lose them, they are in the page cache; a kernel crash may).

POSIX only (``fcntl``); ``flock`` is not reliable on some network file systems, so keep the
spool on a local disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._logs import RateLimitedLog
from ..errors import ConfigurationError

log = logging.getLogger("firehose_buffer")

SUFFIX = ".jsonl"
_TEMP_SUFFIX = ".tmp"
_DIR_MODE = 0o700
_FILE_MODE = 0o600
#: Lines handed back by a reader at a time: bounds what a replay holds beyond the buffer.
READ_CHUNK_BYTES = 1024 * 1024


def ensure_directory(path: str | os.PathLike[str]) -> Path:
    """Create the spool directory (owner-only) or fail with a clear ConfigurationError."""
    directory = Path(path)
    try:
        directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        if not directory.is_dir():
            raise NotADirectoryError(str(directory))
        probe = directory / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
        probe.touch(mode=_FILE_MODE)
        probe.unlink()
    except OSError as exc:
        raise ConfigurationError(f"spool_dir {str(directory)!r} is not usable: {exc}") from exc
    return directory


class _Writer:
    """One stream's open spool file (its descriptor holds the file's ``flock``), and how many
    bytes were written whole; used under the spool's lock."""

    __slots__ = ("fd", "offset", "path", "unsynced")

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        self.offset = 0
        self.unsynced = False


#: Buffers one writev() takes at most (POSIX guarantees 16; Linux takes 1024).
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


class Spool:
    """Appends undeliverable events, one file per stream for the life of the writer.

    Thread-safe: the worker (failures) and callers of ``put()`` (spill) append concurrently.
    ``lock`` is re-entrant only so that a put() re-entering during a spool write can tell
    (see ``_runtime/guard.py``); nothing here takes it twice, and nothing logs under it.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = ensure_directory(directory)
        self.lock = threading.RLock()
        self._writers: dict[str, _Writer] = {}
        #: A full disk fails every append: say so once per interval, with a count.
        self._error_log = RateLimitedLog(log, interval=10.0)
        #: Appends that failed (disk full, permissions...): their events were not kept.
        self.errors = 0
        #: After close(): every append opens, writes, syncs and closes a file of its own, so
        #: no file stays open (and locked against a replay) once close() has returned.
        self._closed = False

    def append(self, stream: str, chunks: bytes | Sequence[bytes | memoryview], *,
               sync: bool = True) -> bool:
        """Append ``chunks`` (whole newline-terminated lines, in one or more buffers) to
        ``stream``'s file.

        Returns False, after logging why, when the lines could not be written; nothing half
        written stays behind. ``sync=False`` leaves the ``fsync`` to :meth:`close`.
        """
        if isinstance(chunks, bytes):
            chunks = [chunks]
        size = sum(len(c) for c in chunks)
        if not size:
            return True
        with self.lock:
            problem = self._append(stream, chunks, size, sync)
        if problem is not None:
            self._error_log.error("%s", problem)
            return False
        return True

    def _append(self, stream: str, chunks: Sequence[bytes | memoryview], size: int,
                sync: bool) -> str | None:
        """Under the lock: write, or say why not (logged by the caller, outside the lock)."""
        writer = self._writers.get(stream)
        if writer is not None and _unlinked(writer.fd):
            # Deleted under us (a tmp cleaner, an operator): writing on would keep the events
            # in a file nobody can find. Start a new one, directories included.
            del self._writers[stream]
            os.close(writer.fd)
            writer = None
        if writer is None:
            try:
                writer = self._open(stream)
            except OSError as exc:
                self.errors += 1
                return f"cannot create a spool file in {self.directory}: {exc}"
            if not self._closed:
                self._writers[stream] = writer
        try:
            _write_all(writer.fd, chunks)
            if sync or self._closed:
                os.fsync(writer.fd)
            else:
                writer.unsynced = True
        except OSError as exc:
            self.errors += 1
            problem = f"cannot write to spool file {writer.path}: {exc}"
            truncated = self._abandon(stream, writer)
            return problem if truncated is None else f"{problem}; {truncated}"
        writer.offset += size
        if self._closed:
            os.close(writer.fd)
        return None

    def _open(self, stream: str) -> _Writer:
        directory = self.directory / stream
        directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(4)}"
        temp = directory / (name + _TEMP_SUFFIX)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                     _FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            final = directory / (name + SUFFIX)
            os.rename(temp, final)
        except OSError:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        return _Writer(fd, final)

    def _abandon(self, stream: str, writer: _Writer) -> str | None:
        """After a failed write: cut the file back to its last whole line, start anew."""
        self._writers.pop(stream, None)
        problem = None
        try:
            os.ftruncate(writer.fd, writer.offset)
            if writer.offset == 0:
                writer.path.unlink(missing_ok=True)
        except OSError as exc:
            problem = f"cannot truncate spool file {writer.path} after a failed write: {exc}"
        os.close(writer.fd)
        return problem

    def close(self) -> None:
        """Sync and release every file; they become claimable by a replay. Appends after
        this still work, each in a file closed at once."""
        with self.lock:
            writers, self._writers = self._writers, {}
            self._closed = True
        for writer in writers.values():
            try:
                if writer.unsynced:
                    os.fsync(writer.fd)
            except OSError as exc:
                log.error("cannot sync spool file %s: %s", writer.path, exc)
            finally:
                os.close(writer.fd)

    def after_fork(self) -> None:
        """In a forked child: the descriptors and their locks are the parent's; let go of
        them without unlocking or syncing (closing our copies does neither)."""
        self.lock = threading.RLock()
        self._error_log = RateLimitedLog(log, interval=10.0)
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            with contextlib.suppress(OSError):
                os.close(writer.fd)


def _unlinked(fd: int) -> bool:
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return True


def _write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> None:
    """Every byte of ``chunks``, in order, through as few writev() calls as it takes."""
    pending = [memoryview(c) for c in chunks if len(c)]
    while pending:
        batch = pending[:_IOV_MAX]
        written = os.writev(fd, batch)
        # Drop what went out; a short write leaves part of one buffer behind.
        done = 0
        while done < len(batch) and written >= len(batch[done]):
            written -= len(batch[done])
            done += 1
        rest = pending[done:]
        if written and rest:
            rest[0] = rest[0][written:]
        pending = rest


@dataclass(frozen=True, slots=True)
class SpoolFile:
    """A spool file found on disk for replay: the stream it is for and its path."""

    stream: str
    path: Path

    @property
    def label(self) -> str:
        return f"spool file {self.path}"

    def claim(self) -> Claim | None:
        return claim(self)


def pending_files(directory: str | os.PathLike[str]) -> list[SpoolFile]:
    """Spool files under ``directory``, oldest first (names start with their creation time)."""
    root = Path(directory)
    found: list[SpoolFile] = []
    try:
        streams = sorted(p for p in root.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    for stream_dir in streams:
        found.extend(SpoolFile(stream_dir.name, p) for p in stream_dir.glob("*" + SUFFIX))
    found.sort(key=lambda f: (f.path.name, f.stream))
    return found


class Claim:
    """Exclusive ownership of one spool file (an ``flock`` held until released)."""

    #: Spool files can be edited by hand: the replay checks every line.
    validate = True
    possible_duplicates = 0

    def __init__(self, spool_file: SpoolFile, fd: int) -> None:
        self.stream = spool_file.stream
        self.path = spool_file.path
        self.label = spool_file.label
        self._fd = fd
        #: Bytes at the end of the file that were not a whole line (a torn write).
        self.torn_bytes = 0

    @property
    def torn(self) -> int:
        return 1 if self.torn_bytes else 0

    def pieces(self) -> Iterator[tuple[str, list[bytes]]]:
        """:meth:`chunks`, each with the stream (the replay's common shape)."""
        for chunk in self.chunks():
            yield self.stream, chunk

    def chunks(self, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[list[bytes]]:
        """The file's whole lines (each with its newline), a chunk at a time."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        rest = b""
        while True:
            block = os.read(self._fd, chunk_bytes)
            if not block:
                break
            data = rest + block
            end = data.rfind(b"\n") + 1
            rest = data[end:]
            if end:
                lines = [line + b"\n" for line in data[: end - 1].split(b"\n") if line]
                if lines:
                    yield lines
        self.torn_bytes = len(rest)

    def remove(self) -> None:
        """Delete the file, then let the lock go: nobody can claim it in between."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self.release()

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def claim(spool_file: SpoolFile) -> Claim | None:
    """Lock ``spool_file`` for this process, or None if another holder has it or it is gone."""
    try:
        fd = os.open(spool_file.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Its last holder may have replayed and deleted it after we opened it.
        if os.fstat(fd).st_nlink == 0:
            raise FileNotFoundError(spool_file.path)
    except OSError:
        os.close(fd)
        return None
    return Claim(spool_file, fd)


def count_lines(directory: str | os.PathLike[str]) -> int:
    """Whole lines in every spool file (for progress reports)."""
    total = 0
    for spool_file in pending_files(directory):
        try:
            with spool_file.path.open("rb") as f:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except OSError:
            continue
    return total
