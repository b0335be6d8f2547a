"""The counters of an idle buffer add up the way README says they do, whatever ``on_full``
does with the events it refuses."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
from counters import counters, documented_identity, identity_gap
from hostile_server import HostileFirehose

from firehose_buffer import BufferConfig, FirehoseBuffer

STREAM = "identity"


@pytest.fixture
def firehose() -> Iterator[HostileFirehose]:
    with HostileFirehose() as server:
        yield server


def test_readme_documents_an_identity_over_the_counters() -> None:
    """The identity the tests hold the counters to is README's own (guards the parser)."""
    left, right = documented_identity()
    assert left == ["events_put"]
    assert {"events_delivered", "events_failed", "events_buffered"} <= set(right)


def test_the_documented_identity_holds_when_on_full_drop_refuses_events(
    firehose: HostileFirehose,
) -> None:
    """A 20 KB buffer offered 3,000 events of 0.5 KB at once refuses most of them
    (``on_full="drop"``: put() returns False, the event is counted in events_dropped).
    Once idle, README's identity must hold; and the counters must agree with what put()
    said: one drop counted per False, one delivery per True. An events_put that left the
    dropped events out, while the identity counts them in, would read 40 put and delivered
    and 2,960 dropped: 40 != 3,000."""
    config = BufferConfig(streams=(STREAM,), endpoint_url=firehose.endpoint_url,
                          region="us-east-1", max_record_bytes=10_000, max_buffer_bytes=20_000,
                          on_full="drop", linger_seconds=0.05)
    with FirehoseBuffer(config) as buf:
        said = Counter(buf.put({"n": n, "pad": "p" * 480}) for n in range(3000))
        assert buf.flush(10)
        stats = buf.stats()
    assert said[False] > 0, "nothing was dropped: the test did not test anything"
    assert stats.events_dropped == said[False]
    assert stats.events_delivered == said[True] == len(
        {orjson.loads(line)["n"] for line in firehose.lines(STREAM)})
    assert stats.events_buffered == 0
    gap = identity_gap(counters(stats))
    assert gap is None, gap
