"""Durable segments against SIGKILLs of a paced producer: two threads put 500 events/s
each (0.1-2 KB) under the high quota, so records do not wait and streams keep moving to free
segments (``Accumulator.reseat``: the short rest copied over, its old place marked sent,
then acknowledged). The process is killed at a random moment among those moves; another
process recovers: every event put() accepted is delivered, none is corrupt, and every
duplicate is counted (see ``tests/test_durable_kills.py`` for the producer and helpers)."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from firehose_buffer._storage import durable
from firehose_buffer.emulator import LocalFirehose
from tests.support import wait_for
from tests.test_durable_kills import Child, assert_recovered, firehose, recover, tmpfs_dir

pytestmark = pytest.mark.slow

__all__ = ["firehose", "tmpfs_dir"]  # fixtures


def moves(child: Child) -> int:
    try:
        return Path(f"{child.report}.moves").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("seed", range(101, 107))
def test_a_paced_producer_killed_among_its_moves_loses_nothing_and_counts_duplicates(
    firehose: LocalFirehose, tmp_path: Path, tmpfs_dir: Path, seed: int,
) -> None:
    spool = (tmpfs_dir if seed % 2 else tmp_path) / "spool"
    rng = random.Random(seed)
    logs = tmp_path / "logs"
    logs.mkdir()
    child = Child(firehose, spool, "paced", seed, logs)
    try:
        assert child.line() == "ready"
        first = rng.randint(2, 12)
        wait_for(lambda: moves(child) >= first, 30, f"{first} moves")
        # Paced puts: a random moment, not just after the move we saw.
        time.sleep(rng.uniform(0.0, 0.05))
        child.kill()
        assert child.wait() == -signal.SIGKILL
    finally:
        child.kill()
    assert child.progress() > 50
    assert durable.dead_owners(spool), "the dead child's segments are there to recover"
    recoverer = recover(firehose, spool)
    assert_recovered(child, firehose, recoverer)
    assert durable.dead_owners(spool) == []
