"""A fork never shares pooled connections, whatever client the user passed.

A child Python process (so that the test process itself never forks) builds a buffer with a
plain ``client=`` (a boto3 client made with ``endpoint_url`` to a Firehose on 127.0.0.1),
warms its connection pool, then forks several times; after each fork parent and child both
put and flush at the same time. The server notes which TCP connection each call came on: no
connection may carry events of two processes (that is what garbles requests, but whether a
given run garbles one is luck; the sharing itself is certain). And every event of both must
be delivered, none failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hostile_server import HostileFirehose

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
STREAMS = ("fork-0", "fork-1")
FORKS = 3
PER_BURST = 300

FORKING_CHILD = textwrap.dedent("""
    import json, os, sys, time
    import boto3
    from firehose_buffer import BufferConfig, FirehoseBuffer

    from botocore.config import Config

    endpoint, out_dir = sys.argv[1], sys.argv[4]
    forks, per_burst = int(sys.argv[2]), int(sys.argv[3])
    # Short timeouts: a garbled exchange otherwise waits out botocore's 60 s read timeout.
    client = boto3.client("firehose", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(connect_timeout=1, read_timeout=2,
                                        retries={"total_max_attempts": 1}))
    reported = []
    buffer = FirehoseBuffer(
        BufferConfig(streams=("fork-0", "fork-1"), linger_seconds=0.01,
                     max_events_per_record=10, record_ttl_seconds=20,
                     on_failure=lambda events, reason: reported.extend(
                         (e, reason) for e in events)),
        client=client,
    )

    def burst(who):
        # Spread over a few hundred ms, so that both processes have calls in flight together.
        for seq in range(per_burst):
            buffer.put({"who": who, "seq": seq, "pad": "k" * 200})
            if seq % 10 == 9:
                time.sleep(0.002)
        return bool(buffer.flush(8.0))

    def outcome(who, flushed):
        stats = buffer.stats()
        return {"who": who, "flushed": flushed, "failed": stats.events_failed,
                "reasons": dict(stats.failures_by_reason),
                "reported": [[e.decode(errors="replace")[:60], r] for e, r in reported]}

    burst("warm")   # the pool now holds connections the children inherit
    results = []
    for f in range(forks):
        pid = os.fork()
        if pid == 0:
            try:
                flushed = burst(f"child-{f}")
                buffer.close(10.0)
                result = outcome(f"child-{f}", flushed)
            except BaseException as exc:
                result = {"who": f"child-{f}", "crashed": repr(exc)}
            with open(os.path.join(out_dir, f"child-{f}.json"), "w") as fh:
                json.dump(result, fh)
            os._exit(0)
        flushed = burst(f"parent-{f}")
        os.waitpid(pid, 0)
        results.append(outcome(f"parent-{f}", flushed))
    buffer.close(10.0)
    print(json.dumps(results), flush=True)
""")


@pytest.fixture
def firehose() -> Iterator[HostileFirehose]:
    # With no script, it answers every call as Firehose would.
    with HostileFirehose() as server:
        yield server


def _process(who: str) -> str:
    """Which process put an event: "warm" and "parent-N" are all the parent's."""
    return "parent" if who == "warm" or who.startswith("parent-") else who


def test_fork_with_a_plain_client_shares_no_connection(
    firehose: HostileFirehose, tmp_path: Path,
) -> None:
    """A plain ``client=`` whose pool is warm, then three forks: parent and child never write
    on the same pooled connection (two processes' requests interleaved on one socket fail
    as SerializationException or a bare 400, taken as permanent, in some runs). Both
    deliver everything, nothing fails."""
    out_dir = tmp_path / "children"
    out_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-c", FORKING_CHILD, firehose.endpoint_url, str(FORKS),
         str(PER_BURST), str(out_dir)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parents = orjson.loads(done.stdout.splitlines()[-1])
    children = [orjson.loads(p.read_bytes()) for p in sorted(out_dir.glob("child-*.json"))]
    assert len(children) == FORKS, f"{len(children)} of {FORKS} children reported back"

    shared: dict[tuple[str, int], set[str]] = {}
    for call in firehose.all_calls():
        shared.setdefault(call.peer, set()).update(
            _process(orjson.loads(line)["who"]) for line in call.lines
        )
    shared = {peer: who for peer, who in shared.items() if len(who) > 1}
    assert shared == {}, (
        f"{len(shared)} connections carried calls of more than one process: "
        f"{sorted(map(sorted, shared.values()))}"
    )
    troubled = [r for r in parents + children
                if r.get("crashed") or r["failed"] or not r["flushed"]]
    delivered = Counter(
        orjson.loads(line)["who"] for stream in STREAMS for line in firehose.lines(stream)
    )
    short = {who: n for who, n in delivered.items() if n < PER_BURST}
    expected = {"warm"} | {f"{side}-{f}" for f in range(FORKS) for side in ("parent", "child")}
    assert troubled == [], (
        f"{len(troubled)} of {2 * FORKS} processes had failures after a fork: "
        f"{[(r['who'], r.get('reasons') or r.get('crashed')) for r in troubled]}"
    )
    assert set(delivered) == expected and short == {}, (
        f"missing: {sorted(expected - set(delivered))}, short: {short}"
    )
