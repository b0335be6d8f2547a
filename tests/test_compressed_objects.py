"""Compressed records end to end: sent through the emulator with boto3, stored as Firehose
stores them (records concatenated, named with the stream's FileExtension), and read back
whole by the readers users have: Python's gzip, zstd's stream reader and file API, DuckDB."""

from __future__ import annotations

import gzip
import sys
import uuid
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from firehose_buffer._core.compression import Compressor, decompress_object, sniff
from firehose_buffer.emulator import LocalFirehose

EXTENSION = {"zstd": ".jsonl.zst", "gzip": ".jsonl.gz"}
ROLE = "arn:aws:iam::123456789012:role/firehose-delivery"
BUCKET = "arn:aws:s3:::events-bucket"


def _lines(count: int) -> list[bytes]:
    return [
        orjson.dumps({"id": str(uuid.UUID(int=i * 0x9E3779B97F4A7C15 % 2**128)), "i": i,
                      "user": f"u{i % 37}", "page": f"/p/{i % 11}", "pad": "x" * (i % 300)},
                     option=orjson.OPT_APPEND_NEWLINE)
        for i in range(count)
    ]


def _create(client: Any, name: str, extension: str) -> None:
    client.create_delivery_stream(
        DeliveryStreamName=name, DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": ROLE, "BucketARN": BUCKET, "CompressionFormat": "UNCOMPRESSED",
            "FileExtension": extension,
        },
    )


def _send(client: Any, name: str, codec: str, lines: list[bytes], *, target: int,
          max_records: int = 500) -> int:
    """Every line as compressed records, one PutRecordBatch per call; returns the records."""
    data = b"".join(lines)
    ends = list(accumulate(map(len, lines)))
    compressor = Compressor(codec)
    first = sent = 0
    while first < len(lines):
        offset = ends[first - 1] if first else 0
        result = compressor.compress(memoryview(data)[offset:],
                                     [e - offset for e in ends[first:]], target=target,
                                     max_records=max_records)
        response = client.put_record_batch(
            DeliveryStreamName=name, Records=[{"Data": bytes(r)} for r in result.records]
        )
        assert response["FailedPutCount"] == 0
        first += result.consumed
        sent += len(result.records)
    return sent


def _zstd_readers(path: Path) -> dict[str, bytes]:
    import zstandard  # noqa: PLC0415

    with path.open("rb") as f, zstandard.ZstdDecompressor().stream_reader(
        f, read_across_frames=True
    ) as reader:
        streamed = reader.read()
    with zstandard.open(path, "rb") as f:
        opened = f.read()
    stdlib: Any
    if sys.version_info >= (3, 14):
        from compression import zstd as stdlib  # noqa: PLC0415
    else:
        from backports import zstd as stdlib  # noqa: PLC0415
    with stdlib.open(path, "rb") as f:
        standard = f.read()
    return {"zstandard stream_reader": streamed, "zstandard.open": opened,
            "compression.zstd open": standard}


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_an_object_of_many_records_is_read_whole_by_every_reader(
    tmp_path: Path, codec: str
) -> None:
    lines = _lines(3000)
    name = f"events-{codec}"
    with LocalFirehose(data_dir=tmp_path, buffer_bytes=64 << 20, buffer_seconds=600) as fh:
        client = fh.client()
        _create(client, name, EXTENSION[codec])
        records = _send(client, name, codec, lines, target=1024)
        assert records >= 50
        assert fh.delivered_lines(name) == [line[:-1] for line in lines]
        files = fh.delivered_files(name)
        assert len(files) == 1 and files[0].name.endswith(EXTENSION[codec])
        path = files[0]
        expected = b"".join(lines)
        if codec == "gzip":
            with gzip.open(path, "rb") as f:
                assert f.read() == expected
        else:
            for reader, got in _zstd_readers(path).items():
                assert got == expected, reader
        import duckdb  # noqa: PLC0415

        count, total = duckdb.connect().execute(
            "SELECT count(*), sum(i) FROM read_json(?, format='newline_delimited', "
            "compression=?)", [str(path), codec],
        ).fetchone() or (None, None)
        assert (count, total) == (len(lines), sum(range(len(lines))))


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_each_delivered_file_decodes_alone(tmp_path: Path, codec: str) -> None:
    """Files split at record boundaries (Firehose's buffering size), so each is whole."""
    lines = _lines(2000)
    name = f"split-{codec}"
    with LocalFirehose(data_dir=tmp_path, buffer_bytes=8 * 1024, buffer_seconds=600) as fh:
        client = fh.client()
        _create(client, name, EXTENSION[codec])
        _send(client, name, codec, lines, target=2048, max_records=4)
        fh.flush_delivery()
        files = fh.delivered_files(name)
        assert len(files) >= 3
        got = []
        for path in files:
            stored = path.read_bytes()
            assert sniff(stored) == codec
            got.append(decompress_object(stored))
        assert b"".join(got) == b"".join(lines)


def test_file_extension_is_checked_like_firehose_and_plain_streams_have_none(
    tmp_path: Path,
) -> None:
    with LocalFirehose(data_dir=tmp_path, streams=["plain"]) as fh:
        client = fh.client()
        with pytest.raises(ClientError) as raised:
            _create(client, "bad", ".JSONL")
        assert raised.value.response["Error"]["Code"] == "InvalidArgumentException"
        assert "fileExtension" in raised.value.response["Error"]["Message"]
        fh.create_stream("lines", file_extension=".jsonl")
        for stream in ("plain", "lines"):
            client.put_record(DeliveryStreamName=stream, Record={"Data": b'{"a":1}\n'})
        assert fh.delivered_lines("plain") == fh.delivered_lines("lines") == [b'{"a":1}']
        assert [p.suffix for p in fh.delivered_files("lines")] == [".jsonl"]
        assert "." not in fh.delivered_files("plain")[0].name
        described = client.describe_delivery_stream(DeliveryStreamName="lines")
        destination = described["DeliveryStreamDescription"]["Destinations"][0]
        assert destination["ExtendedS3DestinationDescription"]["FileExtension"] == ".jsonl"
