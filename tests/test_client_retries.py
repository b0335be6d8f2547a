"""A boto3 client passed as README shows it (``client_factory=lambda: boto3.client("firehose")``)
keeps botocore's own retries: a call whose records were stored but whose answer was lost
(a connection reset after storing) is resent by botocore itself, and the buffer sees one
success. README: duplicates happen only when Firehose's answer was lost and the batch was
resent, and ``possible_duplicates`` counts them; botocore reports the resends it made
(``ResponseMetadata.RetryAttempts``).
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import Fault, LocalFirehose

pytestmark = pytest.mark.slow

STREAM = "retries-0"
COUNT = 100


def test_resends_made_by_botocore_itself_are_counted_as_possible_duplicates() -> None:
    """The first call is reset after the emulator stored its records; botocore (default
    retries) sends it again and it succeeds. 100 events land twice, and
    ``possible_duplicates`` must count at least those: it stayed 0."""
    with LocalFirehose(streams=[STREAM]) as fh:
        fh.script(Fault.reset_after_store())
        buffer = FirehoseBuffer(
            BufferConfig(streams=(STREAM,), region="us-east-1", linger_seconds=0.05),
            client_factory=fh.client,
        )
        try:
            events = [{"seq": i} for i in range(COUNT)]
            for event in events:
                assert buffer.put(event)
            assert buffer.flush(20.0)
            stats = buffer.stats()
        finally:
            buffer.close(5.0)
        delivered = Counter(fh.delivered_lines(STREAM))
    assert set(delivered) == {orjson.dumps(e) for e in events}
    duplicates = sum(delivered.values()) - len(delivered)
    assert duplicates > 0, "the reset was not resent by botocore: nothing to count"
    assert duplicates <= stats.possible_duplicates, (
        f"{duplicates} events were stored twice, possible_duplicates is "
        f"{stats.possible_duplicates}"
    )
