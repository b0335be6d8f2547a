"""Durable segments: what put() writes survives the death of the process.

With ``durable=True`` a segment is a file under the spool directory, pre-allocated and mapped
shared (``MAP_SHARED``): put()'s ``ring[-1].write(line)`` copies the line into the page cache
itself, where it stays when the process dies, however it dies. Nothing else is written per
event. The worker keeps, per segment, a record of what is acknowledged (delivered, or kept by
the failure sink); a later process that finds the files of a dead one sends the rest.

Layout, under ``<spool_dir>/@durable/`` (``@`` is never in a stream name, so the spool's
stream directories cannot collide with it)::

    <owner>/lock       held with lockf() by the one process writing the owner's segments
    <owner>/s<n>.seg   a pooled segment: a header page, then the data area put() writes to
    <owner>/x<n>.seg   lines kept apart: longer than a segment, or handed over by a
                       re-entrant put(); same format, one line
    <owner>.new/       an owner being made (renamed into place once its lock is held)

Ownership is a ``lockf`` (POSIX record) lock: the kernel drops it when its process dies,
keeps it while the process lives or is stopped (SIGSTOP), and never passes it to a forked
child (``flock`` and OFD locks are inherited, which would keep a dead parent's files from
being recovered while a child lives). Process ids are never trusted: containers sharing a
volume reuse them. A lockf lock is dropped when its process closes ANY descriptor of the file,
so a process never opens the lock file of an owner it holds (``_IN_USE``).

The header page holds aligned 8-byte words, each written with one store, so a death leaves
each word either old or new, never torn:

    0 magic, 1 generation, 2 state (FREE or FILLING), 3 watermark, 4 sent, 5 data size,
    6 stream name length, 7-14 stream name, 16-79 intervals (start << 32 | end)

``[0, watermark)`` and each interval are acknowledged byte ranges of the data area. Every
value ever stored covers only bytes acknowledged when it was stored, and acknowledgment
only grows within a generation, so any mix of old and new words reports no more than is
acknowledged: a death costs at most a duplicate, never a loss. ``sent`` is the end of the
furthest range that may have reached Firehose (dispatched in a batch, or handed to the
failure sink, or moved to another stream): lines below it that recovery finds
unacknowledged count as possible duplicates.

A segment is reused only once everything in it is acknowledged: its state becomes FREE (one
store: recovery skips it from then on), its used bytes are zeroed (on the worker, without
the GIL), its words reset, then it is FILLING again for its next stream. So after a death
the data of a FILLING segment ends at its first NUL byte (no JSON line holds one): a kill in
the middle of a copy can have written a line's tail before its head, so the last newline
does not tell where the data ends. A last line cut short is dropped and counted, never sent
(put() had not returned for it).
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import fcntl
import itertools
import logging
import mmap
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from ..errors import ConfigurationError
from .segments import Segment

log = logging.getLogger("firehose_buffer")

DIRECTORY = "@durable"
LOCK = "lock"
SUFFIX = ".seg"
_NEW = ".new"
_DIR_MODE = 0o700
_FILE_MODE = 0o600
#: A ``.new`` owner older than this whose lock is free was left by a process that died while
#: making it (it holds no segment yet): removed.
_STALE_NEW_SECONDS = 60.0

PAGE: Final = mmap.ALLOCATIONGRANULARITY
MAGIC: Final = int.from_bytes(b"FHBDUR01", "little")
#: Header word indexes.
W_MAGIC, W_GENERATION, W_STATE, W_WATERMARK, W_SENT, W_SIZE, W_NAME_LEN = range(7)
NAME_OFFSET: Final = 7 * 8
NAME_BYTES: Final = 64
W_SLOTS: Final = 16
#: Acknowledged ranges beyond the watermark the header can hold; more are left out (which
#: under-reports: their lines would be sent again after a death, counted as possible
#: duplicates). Records are acknowledged out of order only after retries, so a few suffice.
SLOTS: Final = 64
#: Header states.
FREE: Final = 0
FILLING: Final = 1

#: Blocks of whole lines recovery hands over at a time.
READ_BLOCK_BYTES = 1024 * 1024

_memset = ctypes.memset  # a foreign call: the GIL is released while it runs


def _pack(start: int, end: int) -> int:
    return (start << 32) | end


def _unpack(value: int) -> tuple[int, int]:
    return value >> 32, value & 0xFFFFFFFF


# -- what this process holds --------------------------------------------------------------

#: Owner directories this process holds the lock of (its own, and those it is recovering), by
#: real path. Never opened again by this process: closing any descriptor of a lock file drops
#: the lock.
_IN_USE: set[str] = set()
_IN_USE_LOCK = threading.Lock()


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _forget_in_child() -> None:
    """A forked child holds none of its parent's locks."""
    global _IN_USE_LOCK
    _IN_USE_LOCK = threading.Lock()
    _IN_USE.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def root_of(spool_dir: str | os.PathLike[str]) -> Path:
    return Path(spool_dir) / DIRECTORY


def probe(spool_dir: str | os.PathLike[str], size: int) -> None:
    """At construction: make sure segment files can be made where ``spool_dir`` is (the
    directory, a pre-allocated file of ``size`` bytes, a shared mapping, a lockf lock), or
    raise ConfigurationError saying why."""
    root = root_of(spool_dir)
    fstype = _fs_type(root.parent)
    if fstype in _NETWORK_FS:
        raise ConfigurationError(
            f"durable=True needs spool_dir on a local file system; {root.parent} is on "
            f"{fstype} (a recovering process could read stale pages, and locks are not "
            "reliable)")
    if fstype in _COPY_ON_WRITE_FS:
        log.warning("durable segments in %s are on %s: rewriting a pre-allocated block there "
                    "can need new space, so a full disk can still kill the process with "
                    "SIGBUS; prefer ext4, xfs or tmpfs", root, fstype)
    path = root / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        try:
            _preallocate(fd, PAGE + size)
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with mmap.mmap(fd, PAGE, flags=mmap.MAP_SHARED) as mapped:
                mapped[0:1] = b"x"
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"durable=True: cannot make segment files in {root}: {exc}") from exc


_COPY_ON_WRITE_FS = frozenset({"btrfs", "zfs", "bcachefs"})
_NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs",
                         "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse"})


def _fs_type(path: Path) -> str | None:
    """The type of the file system ``path`` is on (Linux's mountinfo), or None."""
    try:
        target = os.path.realpath(path)
        best, kind = "", None
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                mount = fields[4].replace("\\040", " ") if len(fields) > 4 else ""
                if (target == mount or target.startswith(mount.rstrip("/") + "/")) and (
                        len(mount) >= len(best)):
                    best, kind = mount, right.split()[0] if right else None
        return kind
    except OSError:
        return None


def _preallocate(fd: int, size: int) -> None:
    """Every byte of the file backed by disk blocks (or tmpfs pages) now: a write into a
    mapping of a sparse file that finds the disk full kills the process with SIGBUS."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        fallocate(fd, 0, size)
        return
    zeros = bytes(1024 * 1024)
    done = 0
    while done < size:
        done += os.pwrite(fd, zeros[: min(len(zeros), size - done)], done)


# -- one segment file ---------------------------------------------------------------------


class SegmentFile:
    """The header of one segment file and what it records (see the module's doc). Every
    method runs on the worker (or, for :meth:`filling`, under the accumulator's lock)."""

    __slots__ = ("_acked", "_address", "_generation", "_header", "_sent", "_slots",
                 "_used_slots", "_watermark", "_words", "kept_bytes", "one_off", "path",
                 "state")

    def __init__(self, path: Path, header: mmap.mmap, address: int, *, one_off: bool) -> None:
        self.path = path
        self._header = header
        self._words = memoryview(header).cast("Q")
        self._address = address
        #: Lines kept apart (one line, freed once its record has an outcome), not pooled.
        self.one_off = one_off
        #: Bytes of the line a one-off holds (what the memory bound counts for it).
        self.kept_bytes = 0
        self.state = FREE
        self._generation = 0
        self._watermark = 0
        self._sent = 0
        self._slots = [0] * SLOTS
        self._used_slots = 0
        #: Acknowledged ranges, sorted and merged: what the header reports, in full.
        self._acked: list[tuple[int, int]] = []

    def filling(self, stream: str, data_size: int) -> None:
        """The segment now belongs to ``stream`` and put() may write to it. The name is
        written before the state that makes it count."""
        name = stream.encode()[:NAME_BYTES]
        header = self._header
        header[NAME_OFFSET:NAME_OFFSET + NAME_BYTES] = name.ljust(NAME_BYTES, b"\0")
        words = self._words
        words[W_NAME_LEN] = len(name)
        words[W_SIZE] = data_size
        words[W_STATE] = FILLING
        self.state = FILLING

    def acked(self, start: int, end: int) -> None:
        """``[start, end)`` of the data area is delivered or kept elsewhere."""
        if end <= start:
            return
        ranges = self._acked
        i = bisect.bisect_left(ranges, (start,))
        if i and ranges[i - 1][1] >= start:
            i -= 1
            start = ranges[i][0]
            end = max(end, ranges[i][1])
            del ranges[i]
        while i < len(ranges) and ranges[i][0] <= end:
            end = max(end, ranges[i][1])
            del ranges[i]
        ranges.insert(i, (start, end))
        self._persist()

    def _persist(self) -> None:
        """Store what changed, one word at a time. Each value stored covers acknowledged
        bytes only, so any mix of old and new words under-reports."""
        ranges = self._acked
        words = self._words
        if ranges and ranges[0][0] == 0:
            mark = ranges[0][1]
            rest = ranges[1:SLOTS + 1]
        else:
            mark = 0
            rest = ranges[:SLOTS]
        if mark != self._watermark:
            words[W_WATERMARK] = mark
            self._watermark = mark
        slots = self._slots
        used = max(self._used_slots, len(rest))
        for k in range(used):
            value = _pack(*rest[k]) if k < len(rest) else 0
            if slots[k] != value:
                words[W_SLOTS + k] = value
                slots[k] = value
        self._used_slots = len(rest)

    def in_flight(self, end: int) -> None:
        """Lines ending at or before ``end`` may have reached Firehose (or the failure sink,
        or another stream's segment)."""
        if end > self._sent:
            self._sent = end
            self._words[W_SENT] = end

    def recycle(self, used: int) -> None:
        """Everything in the segment is acknowledged: FREE first (recovery skips it from this
        store on), then zero what was written, reset the record, next generation."""
        words = self._words
        words[W_STATE] = FREE
        self.state = FREE
        if used:
            _memset(self._address, 0, used)
        words[W_WATERMARK] = 0
        words[W_SENT] = 0
        for k in range(self._used_slots):
            words[W_SLOTS + k] = 0
        self._slots = [0] * SLOTS
        self._used_slots = 0
        self._watermark = 0
        self._sent = 0
        self._acked.clear()
        self._generation += 1
        words[W_GENERATION] = self._generation

    def remove(self) -> None:
        """The file is not needed any more (a one-off whose line has an outcome, or a free
        segment unmapped for room): delete it."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._words.release()
        with contextlib.suppress(BufferError):
            self._header.close()


def _address_of(segment: Segment) -> int:
    pointer = ctypes.c_char.from_buffer(segment)
    try:
        return ctypes.addressof(pointer)
    finally:
        del pointer  # releases its export of the mapping


def _open_segment(path: Path, size: int, *, one_off: bool) -> Segment:
    """A new, pre-allocated segment file mapped shared: a header page, then ``size`` bytes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
    try:
        _preallocate(fd, PAGE + size)
        header = mmap.mmap(fd, PAGE, flags=mmap.MAP_SHARED)
        try:
            segment = Segment.mapped(fd, size, PAGE)
        except BaseException:
            header.close()
            raise
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)  # each mapping keeps the file
    words = memoryview(header).cast("Q")
    words[W_MAGIC] = MAGIC
    words[W_SIZE] = size
    words.release()
    segment.file = SegmentFile(path, header, _address_of(segment), one_off=one_off)
    return segment


# -- the segments of this process -----------------------------------------------------------


class DurableStore:
    """Where this process's segments are made: files of one owner (made on first need),
    pooled by the accumulator; memory when a file cannot be made (a WARNING says so)."""

    durable = True

    def __init__(self, spool_dir: str | os.PathLike[str], names: Sequence[str]) -> None:
        self.root = root_of(spool_dir)
        self.names = tuple(names)
        self.owner: Path | None = None
        self._lock_fd = -1
        self._make = threading.Lock()
        self._numbers = itertools.count()
        #: Every file made and not removed.
        self._files: list[SegmentFile] = []
        self._warned = float("-inf")
        #: Segments that had to be memory (a file could not be made), and why the last did:
        #: said by :meth:`warn` on the worker, never under the accumulator's lock.
        self.fallbacks = 0
        self._told = 0
        self._why = ""

    # -- the accumulator's hooks ----------------------------------------------------------

    def allocate(self, size: int) -> Segment:
        """A pooled segment (under the accumulator's lock)."""
        try:
            owner = self._owner(blocking=True)
            assert owner is not None
            segment = _open_segment(owner / f"s{next(self._numbers)}{SUFFIX}", size,
                                    one_off=False)
        except OSError as exc:
            self._fell_back(exc)
            return Segment.allocate(size)
        assert segment.file is not None
        self._files.append(segment.file)
        return segment

    def filling(self, segment: Segment, index: int) -> None:
        """Stream ``index`` takes ``segment``, before put() can write to it."""
        if segment.file is not None:
            segment.file.filling(self.names[index], len(segment))

    def keep(self, index: int, line: bytes, *, blocking: bool = True) -> Segment | None:
        """``line`` in a file of its own, already written (a line longer than a segment, or
        one a re-entrant put() hands over); None if that cannot be done now. ``blocking``
        False: never wait for a lock (a re-entrant put() may hold it)."""
        try:
            owner = self._owner(blocking=blocking)
            if owner is None:
                return None
            size = -(-len(line) // PAGE) * PAGE
            segment = _open_segment(owner / f"x{next(self._numbers)}{SUFFIX}", size,
                                    one_off=True)
        except OSError as exc:
            self._fell_back(exc)
            return None
        kept = segment.file
        assert kept is not None
        kept.kept_bytes = len(line)
        kept.filling(self.names[index], size)
        segment.write(line)
        self._files.append(kept)
        return segment

    def discard(self, segment: Segment) -> None:
        """A segment that will not be used again (unmapped for room, or a one-off done)."""
        kept = segment.file
        if kept is not None:
            with contextlib.suppress(ValueError):
                self._files.remove(kept)
            kept.remove()
        with contextlib.suppress(BufferError):  # a slice still referenced: freed with it
            segment.unmap()

    # -- the owner ------------------------------------------------------------------------

    def _owner(self, *, blocking: bool) -> Path | None:
        owner = self.owner
        if owner is not None:
            return owner
        if not self._make.acquire(blocking):
            return None
        try:
            if self.owner is None:
                self.owner, self._lock_fd = _make_owner(self.root)
            return self.owner
        finally:
            self._make.release()

    def _fell_back(self, exc: OSError) -> None:
        self._why = str(exc)
        self.fallbacks += 1

    def warn(self) -> None:
        """Log (at most every 10 s) that segments had to be memory; called with no lock held
        (a logging handler may put())."""
        if self.fallbacks == self._told:
            return
        now = time.monotonic()
        if now - self._warned < 10.0:
            return
        self._warned = now
        self._told = self.fallbacks
        log.warning("durable segment file could not be made in %s (%s): events in such "
                    "segments are kept in memory only and do not survive the death of the "
                    "process (%d such segments so far)", self.root, self._why, self.fallbacks)

    def clean(self) -> bool:
        """Nothing in any file is unacknowledged."""
        return all(f.state == FREE for f in self._files)

    def close(self) -> None:
        """After close(): delete the files if everything in them has an outcome; else leave
        them to the next buffer using the spool directory. Then let go of the lock."""
        owner = self.owner
        if owner is None:
            return
        if self.clean():
            for f in list(self._files):
                with contextlib.suppress(OSError):
                    f.path.unlink()
            _remove_owner(owner)
        else:
            log.warning("durable segments in %s still hold events without an outcome; the "
                        "next buffer using this spool directory sends them", owner)
        self._files.clear()
        self._release_owner()

    def _release_owner(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        if self.owner is not None:
            with _IN_USE_LOCK:
                _IN_USE.discard(_key(self.owner))
        self.owner = None

    def after_fork(self) -> None:
        """In a forked child: the owner and its lock are the parent's. Close our copy of the
        lock's descriptor (which drops no lock: the child holds none) and forget them; the
        files are never touched from here."""
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
        self._lock_fd = -1
        self.owner = None
        self._files = []


def _make_owner(root: Path) -> tuple[Path, int]:
    """A new owner directory, its lock held; made under a name recovery ignores and renamed
    into place once locked, so no recovery can take it for a dead one."""
    root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    name = f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(4)}"
    temp = root / (name + _NEW)
    final = root / name
    temp.mkdir(mode=_DIR_MODE)
    fd = -1
    try:
        fd = os.open(temp / LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with _IN_USE_LOCK:
            _IN_USE.add(_key(final))
        os.rename(temp, final)
    except BaseException:
        with _IN_USE_LOCK:
            _IN_USE.discard(_key(final))
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            (temp / LOCK).unlink()
            temp.rmdir()
        raise
    return final, fd


def _remove_owner(owner: Path) -> None:
    """Delete an owner's files, its lock file last (while its lock is still held), then the
    directory."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(owner):
            if entry.name != LOCK:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    with contextlib.suppress(OSError):
        (owner / LOCK).unlink()
    with contextlib.suppress(OSError):
        owner.rmdir()


# -- recovery -------------------------------------------------------------------------------


class DeadOwner:
    """The segment files of a process that held no lock when looked at (a source for the
    replay)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = f"durable segments {path}"

    def claim(self) -> OwnerClaim | None:
        return claim_owner(self.path)


def dead_owners(spool_dir: str | os.PathLike[str]) -> list[DeadOwner]:
    """Owners under ``spool_dir`` whose process is dead (no lock held), oldest first. Never
    one this process holds, nor a live or stopped process's (its lock is held)."""
    root = root_of(spool_dir)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found: list[DeadOwner] = []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if entry.name.endswith(_NEW):
            _remove_if_stale(path)
            continue
        with _IN_USE_LOCK:
            if _key(path) in _IN_USE:
                continue
            if _lock_free(path):
                found.append(DeadOwner(path))
    return found


def _lock_free(owner: Path) -> bool:
    """Whether nobody holds the owner's lock (called with ``_IN_USE_LOCK`` held, for an
    owner this process does not hold: closing our descriptor drops only our own test lock)."""
    try:
        fd = os.open(owner / LOCK, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        # Removed but for the directory (a recovery died at its very end).
        with contextlib.suppress(OSError):
            owner.rmdir()
        return False
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _remove_if_stale(temp: Path) -> None:
    try:
        if time.time() - temp.stat().st_mtime < _STALE_NEW_SECONDS:
            return
    except OSError:
        return
    with _IN_USE_LOCK:
        if _lock_free(temp):
            with contextlib.suppress(OSError):
                (temp / LOCK).unlink()
            with contextlib.suppress(OSError):
                temp.rmdir()


def claim_owner(path: Path) -> OwnerClaim | None:
    """Take a dead owner's lock for this process, or None if another process holds it, or
    took it and recovered it already."""
    with _IN_USE_LOCK:
        if _key(path) in _IN_USE:
            return None
        try:
            fd = os.open(path / LOCK, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_nlink == 0:
                raise FileNotFoundError(path)
        except OSError:
            os.close(fd)
            return None
        _IN_USE.add(_key(path))
    return OwnerClaim(path, fd)


class SegmentImage:
    """What recovery reads from one segment file of a dead process."""

    __slots__ = ("acked", "end", "sent", "stream", "torn")

    def __init__(self, stream: str, end: int, acked: list[tuple[int, int]], sent: int,
                 torn: int) -> None:
        self.stream = stream
        #: Where the data ends: the first NUL byte (or the end of the area).
        self.end = end
        self.acked = acked
        self.sent = sent
        #: 1 if the data ends with a line cut short (dropped), else 0.
        self.torn = torn

    def unacked(self) -> list[tuple[int, int]]:
        """The byte ranges of whole lines not acknowledged, in order."""
        out: list[tuple[int, int]] = []
        pos = 0
        for start, end in sorted(self.acked):
            if start > pos:
                out.append((pos, min(start, self.end)))
            pos = max(pos, end)
            if pos >= self.end:
                break
        if pos < self.end:
            out.append((pos, self.end))
        return [(a, b) for a, b in out if b > a]


def read_image(mapped: mmap.mmap) -> SegmentImage | None:
    """The image of a mapped segment file (header page and data), or None if it holds
    nothing to recover (FREE, or not a segment file)."""
    if len(mapped) < PAGE:
        return None
    words = memoryview(mapped)[:PAGE].cast("Q")
    try:
        if words[W_MAGIC] != MAGIC or words[W_STATE] != FILLING:
            return None
        size = min(words[W_SIZE], len(mapped) - PAGE)
        name_len = min(words[W_NAME_LEN], NAME_BYTES)
        acked = [(0, words[W_WATERMARK])] if words[W_WATERMARK] else []
        for k in range(SLOTS):
            value = words[W_SLOTS + k]
            if value:
                acked.append(_unpack(value))
        sent = words[W_SENT]
    finally:
        words.release()
    stream = mapped[NAME_OFFSET:NAME_OFFSET + name_len].decode("utf-8", "replace")
    nul = mapped.find(b"\0", PAGE, PAGE + size)
    end = size if nul < 0 else nul - PAGE
    last = mapped.rfind(b"\n", PAGE, PAGE + end)
    whole = 0 if last < 0 else last + 1 - PAGE
    torn = 1 if whole < end else 0
    if not torn and nul >= 0 and mapped[nul:PAGE + size].strip(b"\0"):
        torn = 1  # a line's tail written before its head
    return SegmentImage(stream, whole, acked, sent, torn)


class OwnerClaim:
    """A dead process's segments, claimed (its lock held) by this one until recovered and
    removed, or released (see ``_storage/recovery.py`` for what a claim provides)."""

    #: Lines put() wrote were checked by put(): whole lines recovery reads are sent as they
    #: are, in blocks.
    validate = False

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.label = f"durable segments {path}"
        self._fd = fd
        self.torn = 0
        self.possible_duplicates = 0
        self.events = 0

    def pieces(self, block_bytes: int = READ_BLOCK_BYTES) -> Iterator[tuple[str, list[bytes]]]:
        """Per segment file, its stream and its unacknowledged lines in blocks of whole lines.

        Before a file's lines are handed over, its ``sent`` is moved to the end of its data:
        if this process dies before the recovery is done, the next one counts every line of
        it as a possible duplicate."""
        for path in sorted(self.path.glob("*" + SUFFIX)):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                size = os.fstat(fd).st_size
                mapped = mmap.mmap(fd, size, flags=mmap.MAP_SHARED) if size else None
            except (OSError, ValueError):
                mapped = None
            finally:
                os.close(fd)
            if mapped is None:
                continue
            try:
                image = read_image(mapped)
                if image is None:
                    continue
                self.torn += image.torn
                blocks: list[bytes] = []
                for start, end in image.unacked():
                    pos = start
                    while pos < end:
                        stop = min(end, pos + block_bytes)
                        if stop < end:
                            cut = mapped.rfind(b"\n", PAGE + pos, PAGE + stop)
                            stop = end if cut < 0 else cut + 1 - PAGE
                        block = mapped[PAGE + pos:PAGE + stop]
                        if pos < image.sent:
                            # Possibly delivered before the death: sent again, counted.
                            self.possible_duplicates += block.count(
                                b"\n", 0, min(stop, image.sent) - pos)
                        blocks.append(block)
                        pos = stop
                words = memoryview(mapped)[:PAGE].cast("Q")
                words[W_SENT] = max(words[W_SENT], image.end)
                words.release()
            finally:
                mapped.close()
            self.events += sum(b.count(b"\n") for b in blocks)
            if blocks:
                yield image.stream, blocks

    def remove(self) -> None:
        """Every line has an outcome: delete the files, then let go of the lock."""
        try:
            _remove_owner(self.path)
        finally:
            self.release()

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            with _IN_USE_LOCK:
                _IN_USE.discard(_key(self.path))

    def after_fork(self) -> None:
        """In a forked child: the claim is the parent's."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def count_events(spool_dir: str | os.PathLike[str]) -> tuple[int, set[str]]:
    """Unacknowledged whole lines in dead owners' segments, and their streams (for
    ``firehose-buffer replay``'s report), read without claiming."""
    total = 0
    streams: set[str] = set()
    for owner in dead_owners(spool_dir):
        for path in owner.path.glob("*" + SUFFIX):
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size < PAGE:
                        continue
                    with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mapped:
                        image = read_image(mapped)
                        if image is None:
                            continue
                        for start, end in image.unacked():
                            total += mapped[PAGE + start:PAGE + end].count(b"\n")
                        streams.add(image.stream)
            except (OSError, ValueError):
                continue
    return total, streams
