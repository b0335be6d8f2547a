"""Records that are each one complete zstd frame or gzip member of whole JSON Lines.

Firehose bills each record's size as received, rounded up to 5,120 bytes, and writes the records
of a stream concatenated into S3 objects. When every record is one complete zstd frame (or gzip
member) of whole lines, the object is a standard multi-frame ``.jsonl.zst`` (multi-member
``.jsonl.gz``) file that decodes to the JSON Lines sent, and the bill and the byte quota count
compressed bytes.

:class:`Compressor` turns a run of whole lines into such records. A compressed size is only
known once compressed, so a record is built like this: lines are fed in bulk (sized from the
compression ratio seen so far, the first step of a frame at most 128 KiB) until the frame is
one alignment window short of ``target``, with a block flush (zstd ``FLUSH_BLOCK``, deflate
``Z_SYNC_FLUSH``) after each step to learn the exact size. In the window, a flush follows each
line that may be the last one below a 5,120-byte boundary (the next line's estimated size would
reach it), and lines in between go in without one: a flush costs output (60-130 bytes for a
zstd block, ~40 for deflate), so it is spent only where a cut can pay. Every flush point is a
candidate end whose record size is exact (what has been written plus a fixed epilogue); the
record ends at the candidate whose last step wastes least, and the frame is closed there by
appending the epilogue to the bytes written up to that flush:

- zstd: an empty raw block marked last (3 bytes, what libzstd itself writes to end a frame).
  Frames carry no content size and no checksum, so nothing else depends on where they end.
- gzip: raw deflate between a gzip header we write and an empty final fixed-Huffman block
  (``03 00``) with the CRC-32 and length of the record's lines.

The lines fed after the chosen candidate are compressed again for the next record: the engine's
frame is ended (zstd ``FLUSH_FRAME``; deflate ``Z_FULL_FLUSH``, which forgets the history, so
the next member decodes alone) and that output is dropped. At 512 KiB records that is under 1%
of the raw bytes compressed twice; billed/wire drops from ~1.0065 (the last line that fits) to
~1.0003-1.0012, for 0.02-0.2% of the ratio.

Memory: one output buffer per compressor, grown to its high-water mark and reused, so building
records faults no new pages in steady state. The returned memoryviews point into it and are
valid until the next call. Every engine writes its output in pieces of at most
:data:`CHUNK_BYTES` (fed input is sliced, zstandard's writer has that output size), so the
temporary ``bytes`` the bindings return stay small and come from the allocator's free lists
(the standard library's zstd allocates an output of the input's compress bound per call: a
whole record fed at once would be a fresh multi-megabyte mapping every time).

A compressor holds a compression context (zstd level 3: ~3.5 MB once used; deflate ~0.3 MB)
and its output buffer (up to ``max_bytes`` of one call), and is not thread-safe: one per thread
(sharing a python-zstandard ``ZstdCompressor`` raised ``ZstdError``); a second thread entering
:meth:`Compressor.compress` while another is inside gets ``RuntimeError``. zlib and both zstd
bindings release the GIL while compressing.
"""

from __future__ import annotations

import gzip
import importlib
import io
import mmap
import struct
import threading
import zlib
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from types import ModuleType
from typing import Any, Final, Literal, Protocol

from .._service.firehose import FIREHOSE
from ..errors import ConfigurationError

Codec = Literal["zstd", "gzip"]
BytesLike = bytes | bytearray | memoryview | mmap.mmap
CODECS: Final[tuple[Codec, ...]] = ("zstd", "gzip")

#: Levels used when none is given; chosen from ``benchmarks/compression.py`` (ratio, CPU per
#: byte and bill on tracking-like and worst-case events).
DEFAULT_LEVELS: Final[dict[str, int]] = {"zstd": 3, "gzip": 1}
LEVEL_RANGES: Final[dict[str, tuple[int, int]]] = {"zstd": (1, 22), "gzip": (1, 9)}

ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC: Final = b"\x1f\x8b"
#: Where zstd comes from, in the order tried: the standard library (3.14+), python-zstandard
#: (the ``zstd`` extra), the standard library's backport.
ZSTD_BACKENDS: Final = ("compression.zstd", "zstandard", "backports.zstd")

#: Largest piece of input fed, and of output written, at once (see the module docstring).
CHUNK_BYTES: Final = 32 * 1024
#: How far below ``target`` a record may end to waste less of its last step: two step
#: boundaries to land under. Measured at 512 KiB records (``benchmarks/compression.py
#: --sweep``): billed/wire 1.0003 (tracking-like) and 1.0012 (worst case) against 1.0064 for the
#: last line that fits; four steps gain 0.0006 on the worst case for a third more flushes.
ALIGN_WINDOW_BYTES: Final = 2 * FIREHOSE.billing_step
#: A candidate wasting at most this much (5% of a step) ends the record at once: later lines
#: could save at most that, and stopping saves their flushes (a zstd block flush costs 60-80
#: bytes of output, a deflate sync flush ~40) and their second compression.
GOOD_ENOUGH_WASTE: Final = 256
#: Bulk steps aim this far short of the window, as a fraction: the ratio within a frame varies,
#: and overshooting ``target`` costs a restart of the record.
_UNDERSHOOT: Final = 0.9
#: A bulk step smaller than this (in compressed bytes) is not worth a flush of its own.
_BULK_MIN_WIRE: Final = 1024
#: A line whose estimated end plus this many times the next line's estimated size reaches the
#: next step boundary gets a flush after it: estimates within a frame are good to a few tens of
#: percent over a few lines.
_NEXT_LINE_MARGIN: Final = 1.5
#: Raw bytes of a frame's first bulk step at most.
_PROBE_BYTES: Final = 128 * 1024
_FIRST_RATIO: Final = 2.0
_RATIO_WEIGHT: Final = 0.25
_MAX_RESTARTS: Final = 3

_ZSTD_END: Final = b"\x01\x00\x00"  # an empty raw block with Last_Block set
#: gzip header: deflate, no flags, no mtime, no extra flags, OS unknown (as Python's gzip).
_GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_DEFLATE_END: Final = b"\x03\x00"  # an empty final block with fixed Huffman codes
_GZIP_TRAILER = struct.Struct("<II")


def resolve_level(codec: str, level: int | None) -> int:
    """``level``, or the codec's default; :class:`ConfigurationError` for a bad pair."""
    if codec not in CODECS:
        raise ConfigurationError(f"compression must be one of {list(CODECS)} or None, "
                                 f"not {codec!r}")
    if level is None:
        return DEFAULT_LEVELS[codec]
    low, high = LEVEL_RANGES[codec]
    if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
        raise ConfigurationError(
            f"compression_level for {codec} must be an int from {low} to {high}, not {level!r}"
        )
    return level


def zstd_module(backend: str | None = None) -> tuple[str, ModuleType]:
    """The first zstd binding that imports (or ``backend``); ConfigurationError if none."""
    for name in (backend,) if backend else ZSTD_BACKENDS:
        try:
            return name, importlib.import_module(name)
        except ImportError:
            continue
    raise ConfigurationError(
        "compression='zstd' needs the zstandard package (pip install 'firehose-buffer[zstd]') "
        "or Python 3.14+ (compression.zstd)"
        if backend is None else f"zstd backend {backend!r} is not installed"
    )


def sniff(data: bytes | bytearray | memoryview) -> Codec | None:
    """The codec an object starts with (by its magic bytes), or None (plain JSON Lines)."""
    head = bytes(data[:4])
    if head == ZSTD_MAGIC:
        return "zstd"
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    return None


def decompress_object(data: bytes | bytearray | memoryview) -> bytes:
    """Every line of an object made of concatenated records: all zstd frames or gzip members
    (sniffed), or the bytes as they are when they are not compressed.

    python-zstandard's ``decompress()``, ``decompressobj()`` and ``read_to_iter()`` stop after
    the first frame; its ``stream_reader(read_across_frames=True)`` and the standard library's
    ``compression.zstd.decompress`` read them all.
    """
    codec = sniff(data)
    if codec == "gzip":
        return gzip.decompress(data)
    if codec == "zstd":
        name, module = zstd_module()
        if name == "zstandard":
            reader = module.ZstdDecompressor().stream_reader(
                io.BytesIO(data), read_across_frames=True
            )
            with reader:
                return bytes(reader.readall())
        return bytes(module.decompress(data))
    return bytes(data)


def compress_whole(codec: str, level: int | None, data: BytesLike) -> bytes:
    """``data`` (whole lines) as one zstd frame or gzip member of its own: for lines that
    go out as a record alone (longer than a segment, or handed over by a re-entrant put()),
    rarely enough that a one-shot context costs nothing worth keeping."""
    level = resolve_level(codec, level)
    if codec == "gzip":
        return gzip.compress(data, compresslevel=level, mtime=0)
    backend, module = zstd_module()
    if backend == "zstandard":
        return bytes(module.ZstdCompressor(level=level, write_checksum=False).compress(data))
    return bytes(module.compress(data, level=level))


class _Out:
    """The compressor's output: a buffer written from the start at every call, grown (never
    shrunk) to the largest call's output. Growing copies into a new buffer rather than
    resizing, so views a caller still holds on the old one stay readable."""

    __slots__ = ("buf", "pos")

    def __init__(self, capacity: int) -> None:
        self.buf = bytearray(capacity)
        self.pos = 0

    def write(self, data: bytes) -> int:
        n = len(data)
        end = self.pos + n
        if end > len(self.buf):
            bigger = bytearray(max(end, 2 * len(self.buf)))
            bigger[: self.pos] = memoryview(self.buf)[: self.pos]
            self.buf = bigger
        self.buf[self.pos:end] = data
        self.pos = end
        return n


class _Engine(Protocol):
    """One codec's streaming compressor writing into an :class:`_Out`."""

    epilogue_bytes: int

    def begin(self) -> None:
        """Write what a new frame or member starts with, if written by us."""

    def feed(self, data: memoryview) -> None:
        """Compress ``data`` as part of the open frame (output may lag until :meth:`flush`)."""

    def flush(self) -> None:
        """Write everything fed so far as complete blocks, byte-aligned."""

    def epilogue(self, raw: list[memoryview]) -> bytes:
        """What ends a frame or member holding exactly the bytes of ``raw``, after a
        :meth:`flush`."""

    def restart(self) -> None:
        """Forget the open frame: the next :meth:`feed` starts a new one with no history.
        May write to the output; the caller drops that."""


class _ZstandardEngine:
    """The ``zstandard`` package's streaming writer; one per :class:`Compressor`, so one per
    thread (a ``ZstdCompressor`` shared between threads raises ``ZstdError``)."""

    epilogue_bytes = len(_ZSTD_END)

    def __init__(self, module: ModuleType, level: int, out: _Out) -> None:
        self._flush_block = module.FLUSH_BLOCK
        self._flush_frame = module.FLUSH_FRAME
        cctx = module.ZstdCompressor(level=level, write_checksum=False, write_content_size=False)
        self._writer: Any = cctx.stream_writer(out, write_size=CHUNK_BYTES, closefd=False)

    def begin(self) -> None:
        pass

    def feed(self, data: memoryview) -> None:
        self._writer.write(data)

    def flush(self) -> None:
        self._writer.flush(self._flush_block)

    def epilogue(self, raw: list[memoryview]) -> bytes:
        return _ZSTD_END

    def restart(self) -> None:
        self._writer.flush(self._flush_frame)


class _StdlibZstdEngine:
    """``compression.zstd`` (Python 3.14+) or its backport, which share one API."""

    epilogue_bytes = len(_ZSTD_END)

    def __init__(self, module: ModuleType, level: int, out: _Out) -> None:
        param = module.CompressionParameter
        options = {param.compression_level: level, param.checksum_flag: 0,
                   param.content_size_flag: 0}
        self._c: Any = module.ZstdCompressor(options=options)
        self._block = module.ZstdCompressor.FLUSH_BLOCK
        self._frame = module.ZstdCompressor.FLUSH_FRAME
        self._out = out

    def begin(self) -> None:
        pass

    def feed(self, data: memoryview) -> None:
        compress, write = self._c.compress, self._out.write
        for offset in range(0, len(data), CHUNK_BYTES):
            piece = compress(data[offset:offset + CHUNK_BYTES])
            if piece:
                write(piece)

    def flush(self) -> None:
        self._out.write(self._c.compress(b"", self._block))

    def epilogue(self, raw: list[memoryview]) -> bytes:
        return _ZSTD_END

    def restart(self) -> None:
        self._c.compress(b"", self._frame)


class _DeflateEngine:
    """gzip members around raw deflate, so the member can end at any sync-flush point."""

    epilogue_bytes = len(_DEFLATE_END) + _GZIP_TRAILER.size

    def __init__(self, level: int, out: _Out) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._out = out

    def begin(self) -> None:
        self._out.write(_GZIP_HEADER)

    def feed(self, data: memoryview) -> None:
        compress, write = self._z.compress, self._out.write
        for offset in range(0, len(data), CHUNK_BYTES):
            piece = compress(data[offset:offset + CHUNK_BYTES])
            if piece:
                write(piece)

    def flush(self) -> None:
        self._out.write(self._z.flush(zlib.Z_SYNC_FLUSH))

    def epilogue(self, raw: list[memoryview]) -> bytes:
        crc = size = 0
        for piece in raw:
            crc = zlib.crc32(piece, crc)
            size += len(piece)
        return _DEFLATE_END + _GZIP_TRAILER.pack(crc, size & 0xFFFFFFFF)

    def restart(self) -> None:
        # A full flush drops the history: what follows decodes without what came before.
        self._z.flush(zlib.Z_FULL_FLUSH)


class _Raw:
    """A run's bytes: one buffer, or several pieces read as one (lines over segments)."""

    __slots__ = ("starts", "views")

    def __init__(self, views: list[memoryview]) -> None:
        self.views = views
        self.starts = [0, *accumulate(len(v) for v in views)]

    def __len__(self) -> int:
        return self.starts[-1]

    def slices(self, a: int, b: int) -> list[memoryview]:
        """Views covering bytes ``a`` to ``b`` of the run, in order."""
        views, starts = self.views, self.starts
        if len(views) == 1:
            return [views[0][a:b]]
        out = []
        i = bisect_right(starts, a) - 1
        while a < b:
            end = min(b, starts[i + 1])
            out.append(views[i][a - starts[i]:end - starts[i]])
            a = end
            i += 1
        return out


@dataclass(slots=True)
class Compressed:
    """What one :meth:`Compressor.compress` call made.

    ``records[i]`` holds the next ``lines[i]`` lines, in order: the first ``consumed`` lines of
    the run. The views point into the compressor's buffer and are valid until its next call.
    ``oversize`` means the line at index ``consumed`` alone compresses to more than ``limit``
    (only incompressible lines within a few hundred bytes of 1,024,000 can): it cannot be sent
    as a record of this codec.
    """

    records: list[memoryview]
    lines: list[int]
    consumed: int
    raw_bytes: int
    wire_bytes: int
    oversize: bool = False
    #: Each record's size had it been cut at its longest candidate instead of the least-waste
    #: one (the size a cut without the choice gets, with the same flushes): for measurement.
    longest: list[int] = field(default_factory=list)


_LEAVE: Final = -1  # the record would not be full and nothing obliges it to leave
_OVERSIZE: Final = -2  # its first line alone does not fit


class Compressor:
    """Compresses runs of whole lines into records of one zstd frame or gzip member each.

    ``codec`` is ``"zstd"`` or ``"gzip"``; ``level`` defaults to :data:`DEFAULT_LEVELS`.
    ``backend`` picks a zstd binding (one of :data:`ZSTD_BACKENDS`; default: the first that
    imports). ``window_bytes`` and ``good_enough`` tune the cut (see the module docstring).
    ``ratio`` is the running estimate of raw/compressed bytes over recent records, which a
    scheduler can use to predict wire bytes before compressing.
    """

    def __init__(
        self,
        codec: str,
        level: int | None = None,
        *,
        backend: str | None = None,
        window_bytes: int = ALIGN_WINDOW_BYTES,
        good_enough: int = GOOD_ENOUGH_WASTE,
    ) -> None:
        self.level = resolve_level(codec, level)
        self.codec: Codec = "zstd" if codec == "zstd" else "gzip"
        self.window_bytes = window_bytes
        self.good_enough = good_enough
        self.ratio = _FIRST_RATIO
        self._out = _Out(4 * CHUNK_BYTES)
        self._busy = threading.Lock()
        self.backend: str
        self._engine: _Engine
        if self.codec == "gzip":
            self.backend = "zlib"
            self._engine = _DeflateEngine(self.level, self._out)
        else:
            self.backend, module = zstd_module(backend)
            if self.backend == "zstandard":
                self._engine = _ZstandardEngine(module, self.level, self._out)
            else:
                self._engine = _StdlibZstdEngine(module, self.level, self._out)
        # Counters for benchmarks: every flush, and raw bytes compressed a second time.
        self.flushes = 0
        self.recompressed_bytes = 0
        self._longest = 0

    def compress(
        self,
        data: BytesLike | Sequence[BytesLike],
        ends: Sequence[int],
        *,
        target: int,
        limit: int = FIREHOSE.max_record_bytes,
        must: int | None = None,
        max_bytes: int = FIREHOSE.max_batch_bytes,
        max_records: int = FIREHOSE.max_batch_records,
    ) -> Compressed:
        """Records from the leading lines of ``data``.

        ``data`` is one buffer, or a list or tuple of buffers read as their concatenation
        (lines spread over several segments: a record may take lines from all of them, and a
        line may even straddle two). ``ends[k]`` is the offset in ``data`` just past line
        ``k`` (line 0 starts at 0), so lines are ``data[ends[k-1]:ends[k]]``, each ending
        with its newline. Records are full when adding the next line would take them past
        ``target`` wire bytes; each is cut at the candidate within ``window_bytes`` below that
        which wastes least of its last 5,120-byte step, and none exceeds ``limit`` (a line
        alone may exceed ``target``). The first ``must`` lines (default: all) leave now: after
        the full records, the rest of them go in one last record, cut at the least-waste line
        from ``must - 1`` on. Lines that neither fill a record nor must leave stay:
        ``consumed`` says where the next call starts. A call stops before a record that might
        take its output past ``max_bytes`` or past ``max_records`` records (one
        PutRecordBatch), so ``consumed`` can be below ``must``.
        """
        if target <= 0 or limit < target:
            raise ValueError("need 0 < target <= limit")
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("a Compressor is used by one thread at a time: make one per thread")
        views: list[memoryview] = []
        try:
            for piece in data if isinstance(data, list | tuple) else (data,):
                view = memoryview(piece)
                views.append(view)
                if view.ndim != 1 or view.itemsize != 1:
                    views.append(view := view.cast("B"))
            raw = _Raw([v for v in views if v.ndim == 1 and v.itemsize == 1])
            if ends and ends[-1] > len(raw):
                raise ValueError("ends go past the end of data")
            n = len(ends)
            return self._compress(raw, ends, n, n if must is None else min(must, n),
                                  target, limit, max_bytes, max_records)
        finally:
            # Views of the caller's memory end here (an mmap with a view alive cannot close).
            for view in reversed(views):
                view.release()
            self._busy.release()

    def _compress(  # noqa: PLR0917  (one call's bounds, all needed)
        self, raw: _Raw, ends: Sequence[int], n: int, must: int, target: int,
        limit: int, max_bytes: int, max_records: int,
    ) -> Compressed:
        out = self._out
        out.pos = 0
        spans: list[tuple[int, int]] = []
        lines: list[int] = []
        longest: list[int] = []
        pos = 0
        oversize = False
        while pos < n and len(spans) < max_records:
            room = max_bytes - out.pos
            if spans and room < target:
                break
            cap = min(limit, room)
            goal = min(target, cap)
            base = ends[pos - 1] if pos else 0
            if pos >= must and (ends[n - 1] - base) / self.ratio < goal:
                break  # not expected to fill a record, and nothing has to leave
            start = out.pos
            k = self._record(raw, ends, pos, n, must, goal, cap)
            if k < 0:
                out.pos = start
                oversize = k == _OVERSIZE and cap == limit
                break
            spans.append((start, out.pos))
            lines.append(k + 1 - pos)
            longest.append(self._longest)
            self.ratio += _RATIO_WEIGHT * ((ends[k] - base) / (out.pos - start) - self.ratio)
            pos = k + 1
        buf = memoryview(out.buf)
        return Compressed(
            records=[buf[a:b] for a, b in spans],
            lines=lines,
            consumed=pos,
            raw_bytes=ends[pos - 1] if pos else 0,
            wire_bytes=out.pos,
            oversize=oversize,
            longest=longest,
        )

    def _step(  # noqa: PLR0917  (the state of one record, all needed)
        self, ends: Sequence[int], fed: int, n: int, must: int, size: int, goal: int,
        ratio: float, restarts: int, *, first: bool,
    ) -> tuple[int, bool]:
        """The last line of the next step (lines ``fed..last`` go in with one flush after
        them), and whether it is a bulk step.

        Far from the end, a bulk step runs to one window short of ``goal`` (or of the
        estimated end of a last record). Near it, a step runs to the line after which the
        next line might cross the next 5,120-byte boundary (as estimated from ``ratio``): only
        such a line can be the least-waste end below that boundary, so only there is a flush
        (~40-80 bytes of output each) worth its cost.
        """
        if restarts >= _MAX_RESTARTS:
            return fed, False
        window = self.window_bytes
        fed_to = ends[fed - 1] if fed else 0
        if size + (ends[n - 1] - fed_to) / ratio <= goal:
            # All that is left fits (as estimated): a last record, whose candidates are the
            # lines from must - 1 on, in its last window.
            bulk_to = max(ends[n - 1] - window * ratio, ends[must - 2] if must - 2 >= fed else 0)
        else:
            bulk_to = fed_to + (goal - window - size) * ratio * _UNDERSHOOT
        if first:
            # The frame's first step measures its ratio before the rest is trusted to it.
            bulk_to = min(bulk_to, fed_to + _PROBE_BYTES)
        last = bisect_right(ends, bulk_to, fed, n) - 1
        if last > fed and (ends[last] - fed_to) / ratio >= _BULK_MIN_WIRE:
            return last, True
        step = FIREHOSE.billing_step
        boundary = min(goal, (size // step + 1) * step)
        last = fed
        end = size + (ends[fed] - fed_to) / ratio
        while last + 1 < n:
            following = (ends[last + 1] - ends[last]) / ratio
            if end + _NEXT_LINE_MARGIN * following >= boundary:
                break
            last += 1
            end += following
        return last, False

    def _record(  # noqa: PLR0917
        self, raw: _Raw, ends: Sequence[int], pos: int, n: int, must: int, goal: int,
        cap: int,
    ) -> int:
        """Write one record of lines ``pos..k`` at the output's position; return ``k``
        (the output's position is then the record's end), :data:`_LEAVE` or
        :data:`_OVERSIZE` (the output's position is then meaningless)."""
        engine, out = self._engine, self._out
        start = out.pos
        base = ends[pos - 1] if pos else 0
        epi = engine.epilogue_bytes
        window = self.window_bytes
        ratio = self.ratio
        restarts = 0
        engine.begin()
        header = out.pos - start
        cand_k: list[int] = []
        cand_at: list[int] = []
        fed = pos
        full = False
        while fed < n:
            fed_to = ends[fed - 1] if fed else 0
            size = out.pos - start + epi
            if fed > pos:
                ratio = (fed_to - base) / max(1, out.pos - start - header)
            last, bulk = self._step(ends, fed, n, must, size, goal, ratio, restarts,
                                    first=fed == pos)
            for piece in raw.slices(fed_to, ends[last]):
                engine.feed(piece)
            engine.flush()
            self.flushes += 1
            size = out.pos - start + epi
            if size > goal:
                if not cand_k and last == fed:  # one line alone: a record of its own if it fits
                    if size > cap:
                        engine.restart()
                        return _OVERSIZE
                    cand_k.append(last)
                    cand_at.append(out.pos)
                    full = True
                    break
                if cand_k and (not bulk or restarts >= _MAX_RESTARTS
                               or cand_at[-1] - start + epi >= goal - window):
                    full = True
                    self.recompressed_bytes += ends[last] - ends[cand_k[-1]]
                    break
                # A bulk step overshot: start again, trusting the ratio just seen a bit less.
                seen = (ends[last] - base) / max(1, size - epi - header)
                self.ratio = min(self.ratio, seen) * _UNDERSHOOT
                self.recompressed_bytes += ends[last] - base
                restarts += 1
                engine.restart()
                out.pos = start
                engine.begin()
                cand_k.clear()
                cand_at.clear()
                fed = pos
                ratio = self.ratio
                continue
            fed = last + 1
            cand_k.append(last)
            cand_at.append(out.pos)
            if (-size % FIREHOSE.billing_step <= self.good_enough and size >= goal - window
                    and size + (ends[n - 1] - ends[last]) / ratio > goal):
                full = True  # good enough, and more lines are left than would fit
                break
        if not full and pos >= must:
            engine.restart()
            return _LEAVE
        # The least-waste candidate: in the window below the goal (a full record) or below the
        # last line, from must - 1 on (a last record). Ties go to the longer record.
        if full:
            floor_at, first_k = start + goal - window - epi, pos
        else:
            floor_at, first_k = cand_at[-1] - window, must - 1
        best = len(cand_k) - 1
        best_waste = -(cand_at[best] - start + epi) % FIREHOSE.billing_step
        for i in range(best - 1, -1, -1):
            if cand_k[i] < first_k or cand_at[i] < floor_at or best_waste == 0:
                break
            w = -(cand_at[i] - start + epi) % FIREHOSE.billing_step
            if w < best_waste:
                best, best_waste = i, w
        k = cand_k[best]
        self._longest = cand_at[-1] - start + epi
        if best < len(cand_k) - 1:
            self.recompressed_bytes += ends[cand_k[-1]] - ends[k]
        out.pos = cand_at[best]
        end = out.pos + epi
        out.write(engine.epilogue(raw.slices(base, ends[k])))
        engine.restart()
        out.pos = end
        return k
