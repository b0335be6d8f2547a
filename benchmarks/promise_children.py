"""The child processes of ``benchmarks/promises.py``: one script per hostile scenario.

They follow the children of the tests that pin the same promises (tests/test_bad_answers.py,
test_close_deadline.py, test_callback_reentry.py, test_fork_connections.py,
test_spool_replay.py, test_freeze.py), with one difference: every child writes what
``on_failure`` hands it to a file as it gets it (so a child that exits or hangs still shows
what it reported), and prints one JSON line of results last, with the buffer's
``possible_duplicates`` and ``events_lost``. The first argument is a JSON object of
parameters.
"""

from __future__ import annotations

import textwrap

#: Shared by every child: logging to stderr (the parent reads "N events ... lost" there),
#: an on_failure that appends to ``args["reported"]``, and the final results line.
PRELUDE = textwrap.dedent("""
    import json, logging, os, sys, time
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(levelname)s %(name)s %(message)s")
    from firehose_buffer import BufferConfig, FirehoseBuffer

    args = json.loads(sys.argv[1])
    _reported = open(args["reported"], "ab", buffering=0)

    def on_failure(events, reason):
        _reported.write(b"".join(event + b"\\n" for event in events))

    def finish(buffer, accepted, **extra):
        stats = buffer.stats()
        print(json.dumps({"accepted": accepted, "possible_duplicates": stats.possible_duplicates,
                          "events_lost": stats.events_lost, **extra}), flush=True)
""")

#: Bad answers: one malformed (or trickled) answer, then the stream must go on delivering.
HOSTILE_ANSWER = PRELUDE + textwrap.dedent("""
    buffer = FirehoseBuffer(BufferConfig(
        streams=("hostile-0",), endpoint_url=args["endpoint"], region="us-east-1",
        linger_seconds=0.05, retry_initial_backoff_seconds=0.05, retry_max_backoff_seconds=0.2,
        connect_timeout_seconds=1.0, read_timeout_seconds=1.0, call_timeout_seconds=2.0,
        record_ttl_seconds=60.0, on_failure=on_failure))
    flushed = []
    started = time.monotonic()
    for part in (range(0, 30), range(30, 60)):
        for seq in part:
            buffer.put({"seq": seq, "pad": "p" * 40})
        flushed.append(bool(buffer.flush(6.0)))
    seconds = time.monotonic() - started
    closed = bool(buffer.close(2.0))
    finish(buffer, 60, flushed=flushed, closed=closed, seconds=seconds)
""")

#: close() out of time: close(2.0) while on_failure takes 4 s per call; the stream does not exist.
SLOW_CALLBACK = PRELUDE + textwrap.dedent("""
    def slow_on_failure(events, reason):
        on_failure(events, reason)
        time.sleep(4.0)   # a callback that ships to a slow dead-letter store

    buffer = FirehoseBuffer(BufferConfig(streams=("exit-missing",), endpoint_url=args["endpoint"],
                                         region="us-east-1", linger_seconds=0.05,
                                         on_failure=slow_on_failure))
    for seq in range(50):
        buffer.put({"seq": seq})
    deadline = time.monotonic() + 10
    while not os.path.getsize(args["reported"]) and time.monotonic() < deadline:
        time.sleep(0.01)   # the first failure is being reported (and the callback sleeps)
    for seq in range(50, 350):
        buffer.put({"seq": seq})
    started = time.monotonic()
    closed = buffer.close(2.0)
    finish(buffer, 350, closed=bool(closed), close_seconds=time.monotonic() - started)
""")

#: The exit hook out of time: a full 4 MiB buffer of small events, nothing listening, a
#: spool; no close(): the exit hook has exit_timeout_seconds=1 to keep it all.
FULL_BUFFER_EXIT = PRELUDE + textwrap.dedent("""
    from firehose_buffer import BufferFullError
    buffer = FirehoseBuffer(BufferConfig(
        streams=("exit-0", "exit-1"), endpoint_url=args["endpoint"], region="us-east-1",
        spool_dir=args["spool"], max_buffer_bytes=4 * 1024 * 1024, on_full="raise",
        max_events_per_record=20, connect_timeout_seconds=0.5, exit_timeout_seconds=1.0,
        on_failure=on_failure,
    ))
    accepted = 0
    try:
        while True:
            buffer.put({"seq": accepted, "pad": "f" * 20})
            accepted += 1
    except BufferFullError:
        pass
    print(json.dumps({"accepted": accepted}), flush=True)
""")

#: User code calling back: a FirehoseHandler whose exclude leaves out firehose_buffer, on the
#: same buffer; the first call to the missing stream makes the worker log a 4xx.
LOGGING_HANDLER = PRELUDE + textwrap.dedent("""
    from collections.abc import Mapping
    from firehose_buffer.logging import FirehoseHandler

    buffer = FirehoseBuffer(BufferConfig(
        streams=("reentry-good", "reentry-missing"), endpoint_url=args["endpoint"],
        region="us-east-1",
        router=lambda e: 1 if isinstance(e, Mapping) and e.get("bad") else 0,
        linger_seconds=0.05, on_failure=on_failure,
    ))
    handler = FirehoseHandler(buffer, exclude=("botocore", "boto3", "urllib3", "s3transfer"))
    logging.getLogger("firehose_buffer").addHandler(handler)
    buffer.put({"bad": True, "seq": 1000})
    first = buffer.flush(5.0)
    for seq in range(50):
        buffer.put({"seq": seq})
    second = buffer.flush(5.0)
    closed = buffer.close(5.0)
    stats = buffer.stats()
    finish(buffer, [*range(50), 1000], events_put=stats.events_put,
           flushed=[first.pending == 0, bool(second)], closed=bool(closed))
""")

#: User code calling back: on_failure re-puts each failed event (7 KB) into a full buffer,
#: on_full="block".
PUT_FROM_ON_FAILURE = PRELUDE + textwrap.dedent("""
    import threading
    from collections.abc import Mapping
    from firehose_buffer import BufferFullError

    accepted = []
    waits = []
    done = threading.Event()
    holder = []

    def re_put(events, reason):
        on_failure(events, reason)
        for event in events:
            seq = json.loads(event)["seq"]
            started = time.monotonic()
            try:
                if holder[0].put({"seq": 2000 + seq, "pad": "r" * 7000}):
                    accepted.append(2000 + seq)
            except BufferFullError:
                pass
            waits.append(time.monotonic() - started)
        done.set()

    buffer = FirehoseBuffer(BufferConfig(
        streams=("reentry-good", "reentry-missing"), endpoint_url=args["endpoint"],
        region="us-east-1",
        router=lambda e: 1 if isinstance(e, Mapping) and e.get("bad") else 0,
        linger_seconds=0.05, max_record_bytes=16_384, max_buffer_bytes=65_536,
        on_full="block", max_block_seconds=3.0, on_failure=re_put,
    ))
    holder.append(buffer)
    for seq in range(10):
        buffer.put({"bad": True, "seq": seq})
        accepted.append(seq)
    done.wait(17.0)
    for seq in range(100, 105):
        if buffer.put({"seq": seq}):
            accepted.append(seq)
    flushed = bool(buffer.flush(10.0))
    closed = bool(buffer.close(5.0))
    finish(buffer, accepted, flushed=flushed, closed=closed,
           longest_wait=max(waits, default=0.0), re_put=len(waits))
""")

#: Forks: a plain boto3 client=, its pool warmed, then forks; parent and each child burst
#: at the same time. Events carry who put them.
FORKING = PRELUDE + textwrap.dedent("""
    import boto3
    from botocore.config import Config

    forks, per_burst, out_dir = args["forks"], args["per_burst"], args["out_dir"]
    client = boto3.client("firehose", endpoint_url=args["endpoint"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(connect_timeout=1, read_timeout=2,
                                        retries={"total_max_attempts": 1}))
    buffer = FirehoseBuffer(
        BufferConfig(streams=("fork-0", "fork-1"), linger_seconds=0.01,
                     max_events_per_record=10, record_ttl_seconds=20, on_failure=on_failure),
        client=client,
    )

    def burst(who):
        for seq in range(per_burst):
            buffer.put({"who": who, "seq": seq, "pad": "k" * 200})
            if seq % 10 == 9:
                time.sleep(0.002)
        return bool(buffer.flush(8.0))

    burst("warm")
    for f in range(forks):
        pid = os.fork()
        if pid == 0:
            try:
                burst(f"child-{f}")
                buffer.close(10.0)
                stats = buffer.stats()
                result = {"possible_duplicates": stats.possible_duplicates,
                          "events_lost": stats.events_lost, "failed": stats.events_failed}
            except BaseException as exc:
                result = {"crashed": repr(exc)}
            with open(os.path.join(out_dir, f"child-{f}.json"), "w") as fh:
                json.dump(result, fh)
            os._exit(0)
        burst(f"parent-{f}")
        os.waitpid(pid, 0)
    buffer.close(10.0)
    finish(buffer, None, failed=buffer.stats().events_failed)
""")

#: Spool replay: a buffer that puts nothing, on a spool_dir holding earlier runs' events.
SHORT_LIVED = PRELUDE + textwrap.dedent("""
    buffer = FirehoseBuffer(BufferConfig(streams=("spool-0",), endpoint_url=args["endpoint"],
                                         region="us-east-1", spool_dir=args["spool"],
                                         on_failure=on_failure))
    started = time.monotonic()
    flushed = buffer.flush(30.0)
    closed = buffer.close(30.0)
    finish(buffer, None, flushed=bool(flushed), closed=bool(closed),
           seconds=time.monotonic() - started, delivered=buffer.stats().events_delivered)
""")

#: A call in flight at close(), first process: 100 events whose call the emulator holds 2 s;
#: close(0.5) once the parent says the call is in flight.
IN_FLIGHT_CLOSE = PRELUDE + textwrap.dedent("""
    buffer = FirehoseBuffer(BufferConfig(streams=("exit-0",), endpoint_url=args["endpoint"],
                                         region="us-east-1", linger_seconds=0.05,
                                         spool_dir=args["spool"], on_failure=on_failure))
    for seq in range(100):
        buffer.put({"seq": seq})
    print("put", flush=True)
    sys.stdin.readline()
    closed = buffer.close(0.5)
    finish(buffer, 100, closed=bool(closed), spooled=buffer.stats().events_spooled)
""")

#: A call in flight at close(), second process: replays the spool.
REPLAY = PRELUDE + textwrap.dedent("""
    buffer = FirehoseBuffer(BufferConfig(streams=(args["stream"],), endpoint_url=args["endpoint"],
                                         region="us-east-1", linger_seconds=0.05,
                                         spool_dir=args["spool"], on_failure=on_failure))
    flushed = buffer.flush(15.0)
    closed = buffer.close(10.0)
    stats = buffer.stats()
    finish(buffer, None, flushed=bool(flushed), closed=bool(closed),
           replayed=stats.events_replayed, delivered=stats.events_delivered)
""")

#: A freeze: 200 events put with linger 1 s and a 3 s TTL, then frozen by the parent.
FREEZE = PRELUDE + textwrap.dedent("""
    buffer = FirehoseBuffer(BufferConfig(
        streams=("exit-0",), endpoint_url=args["endpoint"], region="us-east-1",
        linger_seconds=1.0, record_ttl_seconds=3.0, on_failure=on_failure,
    ))
    for seq in range(200):
        buffer.put({"seq": seq})
    print("put", flush=True)
    sys.stdin.readline()   # frozen and thawed by the parent in between
    flushed = buffer.flush(10.0)
    failures = dict(buffer.stats().failures_by_reason)
    closed = buffer.close(5.0)
    finish(buffer, 200, flushed=bool(flushed), closed=bool(closed), failures=failures)
""")

#: Full spool disk: RLIMIT_FSIZE=0 once the buffer started. "failed": the stream is
#: missing, every record fails at once; "spill": nothing answers and put() spills.
FULL_DISK = PRELUDE + textwrap.dedent("""
    import resource, signal
    kept = []   # the disk is full: on_failure keeps in memory, written once the limit is lifted

    def keep(events, reason):
        kept.extend(events)

    if args["mode"] == "failed":
        config = BufferConfig(streams=("spool-0",), endpoint_url=args["endpoint"],
                              region="us-east-1", spool_dir=args["spool"], linger_seconds=0.01,
                              max_events_per_record=1, on_failure=keep)
    else:
        config = BufferConfig(streams=("spool-0",), endpoint_url=args["endpoint"],
                              region="us-east-1", spool_dir=args["spool"], linger_seconds=60.0,
                              on_full="spill", max_record_bytes=1024, max_buffer_bytes=1024,
                              connect_timeout_seconds=0.5, on_failure=keep)
    buffer = FirehoseBuffer(config)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    accepted = [seq for seq in range(args["count"]) if buffer.put({"seq": seq, "pad": "f" * 60})]
    buffer.flush(2.0)
    closed = bool(buffer.close(1.0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    on_failure(kept, "kept")
    finish(buffer, accepted, closed=closed)
""")
