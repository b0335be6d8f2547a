"""Compressed records: each one complete zstd frame or gzip member of whole lines, within its
limits, cut where it wastes least; together they decode to exactly the lines, in order."""

from __future__ import annotations

import gzip
import mmap
import random
import resource
import sys
import threading
import zlib
from collections.abc import Sequence
from itertools import accumulate, pairwise
from typing import Any, overload

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firehose_buffer._core.compression import (
    DEFAULT_LEVELS,
    Compressed,
    Compressor,
    decompress_object,
    resolve_level,
    sniff,
)
from firehose_buffer._service.firehose import FIREHOSE
from firehose_buffer.errors import ConfigurationError

BILLING_STEP_BYTES = FIREHOSE.billing_step
MAX_RECORD_BYTES = FIREHOSE.max_record_bytes
FAST = settings(max_examples=60, deadline=None)
STDLIB_ZSTD = "compression.zstd" if sys.version_info >= (3, 14) else "backports.zstd"
#: (codec, backend): every binding installed here.
ENGINES = [
    pytest.param("zstd", "zstandard", id="zstd-zstandard"),
    pytest.param("zstd", STDLIB_ZSTD, id=f"zstd-{STDLIB_ZSTD}"),
    pytest.param("gzip", None, id="gzip-zlib"),
]
WORDS = [b'"event"', b'"page_view"', b'"user_id":', b'"https://shop.example.com/cart"', b"true",
         b"false", b"1234", b'"de-DE"', b'{"a":', b"}", b"null", b'"Mozilla/5.0"']


def make_lines(rng: random.Random, count: int, max_size: int, random_share: float) -> list[bytes]:
    """Lines ending with a newline: compressible word salad, or random bytes (incompressible)."""
    lines = []
    for _ in range(count):
        size = rng.randrange(1, max_size + 1)
        if rng.random() < random_share:
            body = rng.randbytes(size).replace(b"\n", b" ")
        else:
            body = b" ".join(rng.choice(WORDS) for _ in range(size // 6 + 1))[:size]
        lines.append(body + b"\n")
    return lines


def one_frame(codec: str, record: bytes | memoryview) -> bytes:
    """``record`` decoded, asserting it is exactly one complete frame or member."""
    data = bytes(record)
    if codec == "gzip":
        d = zlib.decompressobj(31)
        out = d.decompress(data)
        assert d.eof and d.unused_data == b"" and d.unconsumed_tail == b""
        return out
    import zstandard  # noqa: PLC0415

    z = zstandard.ZstdDecompressor().decompressobj()
    out = z.decompress(data)
    assert z.eof and z.unused_data == b""
    return out


def waste(size: int) -> int:
    return -size % BILLING_STEP_BYTES


class Run:
    """Lines and their ends, relative to the first line not yet consumed."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.first = 0

    def rest(self) -> tuple[bytes, list[int]]:
        rest = self.lines[self.first:]
        return b"".join(rest), list(accumulate(map(len, rest)))


@st.composite
def inputs(draw: st.DrawFn) -> dict[str, Any]:
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    max_size = draw(st.sampled_from([20, 300, 3000, 20_000]))
    lines = make_lines(rng, draw(st.integers(0, 120)), max_size,
                       draw(st.sampled_from([0.0, 0.2, 1.0])))
    target = draw(st.integers(64, 60_000))
    limit = draw(st.integers(target, min(MAX_RECORD_BYTES, 3 * target)))
    return {
        "lines": lines,
        "target": target,
        "limit": limit,
        "must": draw(st.integers(0, len(lines))),
        "max_bytes": draw(st.integers(limit, 4 * limit)),
        "max_records": draw(st.integers(1, 8)),
        "window": draw(st.sampled_from([0, 100, BILLING_STEP_BYTES, 4 * BILLING_STEP_BYTES])),
        "level": draw(st.sampled_from([1, 3, 6])),
    }


def check_call(c: Compressor, result: Compressed, lines: Sequence[bytes], *, target: int,
               limit: int, must: int, max_bytes: int, max_records: int) -> None:
    """Every record of one call: one frame of whole lines, within bounds, no worse a cut."""
    assert len(result.records) == len(result.lines) == len(result.longest)
    assert sum(result.lines) == result.consumed
    assert result.wire_bytes == sum(map(len, result.records)) <= max_bytes
    assert len(result.records) <= max_records
    first = 0
    for record, count, longest in zip(result.records, result.lines, result.longest,
                                      strict=True):
        assert count >= 1
        assert len(record) <= limit
        assert one_frame(c.codec, record) == b"".join(lines[first:first + count])
        assert waste(len(record)) <= waste(longest)
        first += count
    assert result.raw_bytes == sum(map(len, lines[:result.consumed]))
    if result.consumed < must and not result.oversize and len(result.records) < max_records:
        # Stopped for the batch's bytes: no room for a full record, or not even for the next
        # line alone.
        room = max_bytes - result.wire_bytes
        nxt = lines[result.consumed]
        alone = Compressor(c.codec, c.level, backend=c.backend).compress(
            nxt, [len(nxt)], target=MAX_RECORD_BYTES)
        assert room < target or alone.wire_bytes > room


@pytest.mark.parametrize(("codec", "backend"), ENGINES)
@FAST
@given(case=inputs())
def test_records_are_frames_of_whole_lines_that_decode_to_the_input(
    codec: str, backend: str | None, case: dict[str, Any]
) -> None:
    lines: list[bytes] = case["lines"]
    c = Compressor(codec, case["level"], backend=backend, window_bytes=case["window"])
    run = Run(lines)
    wire: list[bytes] = []
    sent: list[bytes] = []
    must = case["must"]
    bounds = {k: case[k] for k in ("target", "limit", "max_bytes", "max_records")}
    calls = 0
    while run.first < len(lines):
        data, ends = run.rest()
        result = c.compress(data, ends, must=must, **bounds)
        check_call(c, result, lines[run.first:], must=must, **bounds)
        wire.extend(bytes(r) for r in result.records)
        sent.extend(lines[run.first:run.first + result.consumed])
        run.first += result.consumed
        if result.oversize:
            # The line cannot be one record: alone, it compresses to more than the limit.
            alone = Compressor(codec, case["level"], backend=backend).compress(
                lines[run.first], [len(lines[run.first])], target=MAX_RECORD_BYTES)
            assert alone.wire_bytes > case["limit"]
            run.first += 1
        must = len(lines) - run.first  # then everything has to leave
        calls += 1
        assert calls <= 2 * len(lines) + 2
    assert decompress_object(b"".join(wire)) == b"".join(sent)
    if not any(len(line) > case["limit"] // 2 for line in lines):
        assert sent == lines  # nothing oversize with lines this small


@pytest.mark.parametrize(("codec", "backend"), ENGINES)
def test_full_records_land_close_to_target_and_waste_little(
    codec: str, backend: str | None
) -> None:
    """On compressible lines, full records fill ``target`` to within the window and waste
    less than a naive cut would on average (half a step)."""
    lines = make_lines(random.Random(7), 6000, 1500, 0.05)
    data, ends = b"".join(lines), list(accumulate(map(len, lines)))
    target = 64 * 1024
    c = Compressor(codec, backend=backend)
    result = c.compress(data, ends, target=target, max_records=500)
    assert result.consumed == len(lines)
    full = [len(r) for r in result.records[:-1]]
    assert len(full) >= 10
    assert all(target - c.window_bytes <= size <= target for size in full)
    mean_waste = sum(map(waste, full)) / len(full)
    naive_waste = sum(map(waste, result.longest[:-1])) / len(full)
    assert mean_waste < min(naive_waste, BILLING_STEP_BYTES / 4)


@pytest.mark.parametrize(("codec", "backend"), ENGINES)
def test_lines_that_do_not_fill_a_record_stay_unless_they_must_leave(
    codec: str, backend: str | None
) -> None:
    lines = make_lines(random.Random(3), 50, 200, 0.0)
    data, ends = b"".join(lines), list(accumulate(map(len, lines)))
    c = Compressor(codec, backend=backend)
    kept = c.compress(data, ends, target=512 * 1024, must=0)
    assert (kept.consumed, kept.records) == (0, [])
    some = c.compress(data, ends, target=512 * 1024, must=20)
    assert 20 <= some.consumed <= len(lines) and len(some.records) == 1
    every = c.compress(data, ends, target=512 * 1024)
    assert every.consumed == len(lines)
    assert one_frame(codec, every.records[0]) == data


@pytest.mark.parametrize(("codec", "backend"), ENGINES)
def test_an_incompressible_line_over_the_limit_is_reported_not_sent(
    codec: str, backend: str | None
) -> None:
    rng = random.Random(1)
    small = b'{"ok":1}\n'
    big = rng.randbytes(30_000).replace(b"\n", b" ") + b"\n"
    lines = [small, big, small]
    data, ends = b"".join(lines), list(accumulate(map(len, lines)))
    c = Compressor(codec, backend=backend)
    result = c.compress(data, ends, target=len(big), limit=len(big))
    assert result.oversize and result.consumed == 1
    assert one_frame(codec, result.records[0]) == small
    # With room for its frame, the same line is a record of its own, over target.
    roomy = c.compress(data[len(small):], [e - len(small) for e in ends[1:]],
                       target=len(big), limit=len(big) + 1024)
    assert not roomy.oversize and roomy.lines[0] == 1 and len(roomy.records[0]) > len(big)


@pytest.mark.parametrize(("codec", "backend"), ENGINES)
def test_memory_is_reused_views_held_by_a_caller_survive_growth(
    codec: str, backend: str | None
) -> None:
    lines = make_lines(random.Random(5), 3000, 1500, 0.3)
    data, ends = b"".join(lines), list(accumulate(map(len, lines)))
    c = Compressor(codec, backend=backend)
    first = c.compress(data[:ends[99]], ends[:100], target=64 * 1024)
    held = first.records[0]  # the caller still holds it when the buffer must grow
    again = c.compress(data, ends, target=64 * 1024, max_records=500)
    assert len(held) == first.wire_bytes and again.wire_bytes > first.wire_bytes
    assert decompress_object(b"".join(again.records)) == data
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        c.compress(data, ends, target=64 * 1024, max_records=500)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    # The budget is 0.1 fault per 4 KB event for a whole put-to-ack cycle, 25 per MB.
    assert faults / (5 * len(data) / 1e6) < 2.5


class _BlockingEnds(Sequence[int]):
    """Ends whose first read waits until released: a thread is then inside compress()."""

    def __init__(self, ends: list[int]) -> None:
        self.ends = ends
        self.inside = threading.Event()
        self.release = threading.Event()

    def __len__(self) -> int:
        return len(self.ends)

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[int]: ...
    def __getitem__(self, i: int | slice) -> int | Sequence[int]:
        self.inside.set()
        assert self.release.wait(5)
        return self.ends[i]


def test_a_compressor_refuses_a_second_thread_while_one_is_inside() -> None:
    c = Compressor("gzip")
    line = b'{"a":1}\n'
    ends = _BlockingEnds([len(line)])
    results: list[Compressed] = []
    worker = threading.Thread(target=lambda: results.append(c.compress(line, ends, target=5120)))
    worker.start()
    try:
        assert ends.inside.wait(5)
        with pytest.raises(RuntimeError, match="one thread at a time"):
            c.compress(line, [len(line)], target=5120)
    finally:
        ends.release.set()
        worker.join(5)
    assert one_frame("gzip", results[0].records[0]) == line
    assert c.compress(line, [len(line)], target=5120).consumed == 1  # usable again


@pytest.fixture
def no_zstd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every zstd binding fails to import, as on a Python < 3.14 without the extra."""
    for name in ("compression.zstd", "zstandard", "backports.zstd"):
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.usefixtures("no_zstd")
def test_zstd_without_a_binding_is_a_configuration_error_naming_the_extra() -> None:
    with pytest.raises(ConfigurationError, match=r"firehose-buffer\[zstd\]"):
        Compressor("zstd")
    line = b'{"a":1}\n'
    assert gzip.decompress(bytes(Compressor("gzip").compress(line, [8], target=99).records[0])) \
        == line


def test_codecs_and_levels_are_checked() -> None:
    assert resolve_level("zstd", None) == DEFAULT_LEVELS["zstd"]
    assert resolve_level("gzip", 9) == 9
    for codec, level in (("lz4", None), ("zstd", 0), ("zstd", 23), ("gzip", 10),
                         ("gzip", True), ("gzip", 1.5)):
        with pytest.raises(ConfigurationError):
            resolve_level(codec, level)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target"):
        Compressor("gzip").compress(b"x\n", [2], target=10, limit=5)


@pytest.mark.parametrize(("codec", "backend"), ENGINES)
def test_decompress_object_reads_every_frame_and_passes_plain_lines(
    codec: str, backend: str | None
) -> None:
    c = Compressor(codec, backend=backend)
    parts = [b'{"n":%d}\n' % i * 50 for i in range(4)]
    records = [bytes(c.compress(p, [len(p)], target=5120).records[0]) for p in parts]
    assert sniff(records[0]) == codec
    assert decompress_object(b"".join(records)) == b"".join(parts)
    assert sniff(b'{"plain":1}\n') is None
    assert decompress_object(b'{"plain":1}\n') == b'{"plain":1}\n'


@pytest.mark.parametrize(("codec", "backend"), ENGINES)
@FAST
@given(case=inputs(), cuts=st.lists(st.floats(0, 1), max_size=4))
def test_pieces_read_as_one_run_give_the_same_records(
    codec: str, backend: str | None, case: dict[str, Any], cuts: list[float]
) -> None:
    """Lines over several segments (split anywhere, even inside a line) make the records one
    buffer of the same bytes makes."""
    lines: list[bytes] = case["lines"]
    data, ends = b"".join(lines), list(accumulate(map(len, lines)))
    points = sorted({int(f * len(data)) for f in cuts} | {0, len(data)})
    pieces = [memoryview(data)[a:b] for a, b in pairwise(points)]
    bounds = {k: case[k] for k in ("target", "limit", "must", "max_bytes", "max_records")}
    whole = Compressor(codec, case["level"], backend=backend).compress(data, ends, **bounds)
    split = Compressor(codec, case["level"], backend=backend).compress(pieces, ends, **bounds)
    assert [bytes(r) for r in split.records] == [bytes(r) for r in whole.records]
    assert (split.lines, split.consumed, split.oversize) == (whole.lines, whole.consumed,
                                                             whole.oversize)


def test_segments_can_be_closed_after_a_call_and_records_outlive_them() -> None:
    """Lines in two mmap segments: compress() keeps no view of them once it returns."""
    lines = make_lines(random.Random(9), 400, 800, 0.1)
    half = len(lines) // 2
    segments = []
    for part in (lines[:half], lines[half:]):
        mm = mmap.mmap(-1, sum(map(len, part)))
        mm.write(b"".join(part))
        segments.append(mm)
    result = Compressor("gzip").compress(segments, list(accumulate(map(len, lines))),
                                         target=16 * 1024)
    for mm in segments:
        mm.close()  # BufferError if a view of it were still alive
    assert decompress_object(b"".join(result.records)) == b"".join(lines)
