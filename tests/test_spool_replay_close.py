"""close() on a buffer that found a spool file at start, while the endpoint is still down.

This is the usual way a spool is found: Firehose (or the network to it) was unreachable, the
last run spooled what it held, the service restarted, and the endpoint is not back yet. The
replay of the old file cannot finish (its flush waits for outcomes that only retries until
``record_ttl_seconds`` would bring), and close() must still hand every event it holds to the
spool within its timeout, as it does when no file was found at start. README: "close() runs
out of time only with events neither delivered, spooled nor handed to on_failure (a slow
callback, a dead endpoint with a short timeout)"; here the spool is healthy and the timeout
is not short.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from firehose_buffer import BufferConfig, FirehoseBuffer

pytestmark = pytest.mark.slow

STREAM = "replay-close-0"
OLD = 100
NEW = 1000
CLOSE_TIMEOUT = 3.0


def _spool_lines(spool: Path) -> Counter[bytes]:
    return Counter(line for path in spool.rglob("*.jsonl") if path.is_file()
                   for line in path.read_bytes().splitlines())


@pytest.mark.parametrize("old_file", [False, True], ids=["no-spool-at-start", "spool-at-start"])
def test_close_spools_everything_while_the_old_spool_cannot_be_replayed(
    tmp_path: Path, refused_endpoint: str, old_file: bool,
) -> None:
    """A spool file from an earlier run (100 events), the endpoint refusing connections, 1,000
    events put, then close(3): every event, old and new, must be in the spool afterwards and
    none counted lost. Without the old file the same close() spools all 1,000 in time; with
    it, close() waited its whole timeout for the replay's flush and then counted all 1,100
    events as lost (ERROR), leaving only the old file's 100 on disk."""
    spool = tmp_path / "spool"
    old = [orjson.dumps({"old": i}) for i in range(OLD)]
    if old_file:
        (spool / STREAM).mkdir(parents=True, mode=0o700)
        (spool / STREAM / "1-1-0000.jsonl").write_bytes(b"".join(line + b"\n" for line in old))
    new = [orjson.dumps({"new": i, "pad": "n" * 40}) for i in range(NEW)]
    buffer = FirehoseBuffer(BufferConfig(
        streams=(STREAM,), endpoint_url=refused_endpoint, region="us-east-1",
        spool_dir=str(spool), linger_seconds=0.05, retry_initial_backoff_seconds=0.01,
        retry_max_backoff_seconds=0.1,
    ))
    for line in new:
        assert buffer.put(line)
    result = buffer.close(CLOSE_TIMEOUT)
    stats = buffer.stats()
    on_disk = _spool_lines(spool)
    expected = new + (old if old_file else [])
    missing = [line for line in expected if line not in on_disk]
    assert stats.events_lost == 0, (
        f"close({CLOSE_TIMEOUT}) counted {stats.events_lost} events lost with a healthy spool "
        f"(result {result}; {len(missing)} of {len(expected)} events are not in the spool)"
    )
    assert not missing, f"{len(missing)} events neither in the spool nor counted lost"
