"""Request bodies built in reused memory are exactly Firehose's PutRecordBatch JSON, for any
records, however large, and one buffer builds one body after another."""

from __future__ import annotations

import base64

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from firehose_buffer._service.firehose import FIREHOSE
from firehose_buffer.transport._body import PIECE_BYTES, BodyBuffer

records = st.lists(
    st.one_of(st.binary(max_size=300), st.integers(0, 3 * PIECE_BYTES + 7).map(
        lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256))),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(records, min_size=1, max_size=4), stream=st.text(min_size=1,
                                                                         max_size=20))
def test_each_body_is_the_put_record_batch_json(batches: list[list[bytes]],
                                                stream: str) -> None:
    buffer = BodyBuffer()
    for batch in batches:
        body = buffer.build(stream, [memoryview(r) for r in batch])
        try:
            assert bytes(body) == FIREHOSE.build_body(stream, batch)
            parsed = orjson.loads(bytes(body))
            assert parsed["DeliveryStreamName"] == stream
            assert [base64.b64decode(r["Data"]) for r in parsed["Records"]] == batch
        finally:
            body.release()


def test_a_buffer_grows_for_a_large_body_and_goes_on() -> None:
    """A body larger than the buffer (4 MiB of records) makes it grow; smaller ones follow."""
    buffer = BodyBuffer()
    for batch in ([b"a" * 10], [bytes(range(256)) * 4096] * 4, [b"b" * 7], [b"c" * 3_000_000]):
        body = buffer.build("s", batch)
        try:
            assert bytes(body) == FIREHOSE.build_body("s", batch)
        finally:
            body.release()
