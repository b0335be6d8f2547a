"""What the examples do with a buffer's final numbers: log them, and write them as JSON to
``$FIREHOSE_EXAMPLE_STATS_DIR/<pid>.json`` when that variable is set (the examples' tests
read ``possible_duplicates`` there)."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import orjson

from firehose_buffer import FirehoseBuffer, FlushResult

log = logging.getLogger("examples")


def report_final_stats(buffer: FirehoseBuffer, result: FlushResult) -> None:
    stats = buffer.stats()
    level = logging.INFO if result else logging.WARNING
    log.log(level, "buffer closed in pid %d: %s; %d put, %d delivered, %d failed, "
            "%d possible duplicates", os.getpid(), result, stats.events_put,
            stats.events_delivered, stats.events_failed, stats.possible_duplicates)
    folder = os.environ.get("FIREHOSE_EXAMPLE_STATS_DIR")
    if folder:
        data = {"pid": os.getpid(), "result": dataclasses.asdict(result),
                "stats": dataclasses.asdict(stats)}
        Path(folder, f"{os.getpid()}.json").write_bytes(orjson.dumps(data))
