"""Flush generations (``_core/flushes.py``) driven as the scheduler drives them: a flush's
result counts exactly the outcomes of the records it covers, whether its mark was made at
once or held while lines were still becoming records (compressed mode), and whatever the
order in which outcomes, new records and the release come."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firehose_buffer._core.flushes import Flushes

#: One step: ("record", events) makes a record; ("outcome", k, delivered) gives the k-th
#: oldest outstanding record its outcome; ("release",) releases a held mark.
steps = st.lists(st.one_of(
    st.tuples(st.just("record"), st.integers(1, 5)),
    st.tuples(st.just("outcome"), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("release")),
), max_size=40)


@given(before=st.lists(st.integers(1, 5), max_size=6), script=steps, held=st.booleans(),
       delivered_flags=st.lists(st.booleans(), min_size=80, max_size=80))
def test_a_flush_counts_every_outcome_of_the_records_it_covers(
    before: list[int], script: list[tuple[object, ...]], held: bool,
    delivered_flags: list[bool],
) -> None:
    flushes = Flushes()
    outstanding: dict[int, int] = {}
    next_id = 1
    for events in before:  # records made before the flush was asked for
        outstanding[next_id] = events
        next_id += 1
    generation = flushes.request()
    assert flushes.due() == generation
    flushes.mark(generation, next_id - 1, len(outstanding), sum(outstanding.values()),
                 held=held)
    covered = set(outstanding)
    releasable = held
    outcomes: dict[int, bool] = {}
    for step in script:
        if step[0] == "record":
            flushes.created(int(step[1]))  # type: ignore[arg-type]
            if flushes.held is not None:
                covered.add(next_id)
            outstanding[next_id] = int(step[1])  # type: ignore[arg-type]
            next_id += 1
        elif step[0] == "outcome" and outstanding:
            rid = sorted(outstanding)[int(step[1]) % len(outstanding)]  # type: ignore[arg-type]
            events = outstanding.pop(rid)
            flushes.resolved(rid, events, delivered=bool(step[2]))
            outcomes[rid] = bool(step[2])
        elif step[0] == "release" and releasable:
            flushes.release(next_id - 1)
            releasable = False
    if releasable:
        flushes.release(next_id - 1)
    for rid in sorted(outstanding):  # every record gets its outcome in the end
        flushes.resolved(rid, outstanding[rid], delivered=delivered_flags[rid % 80])
        outcomes[rid] = delivered_flags[rid % 80]
    assert flushes.publish()
    result = flushes.result(generation, 0)
    assert result.pending == 0
    delivered = result.delivered
    failed = result.failed
    # What the flush covers: the records outstanding when asked, and (held) those made before
    # the release.
    assert delivered + failed == sum(_events(before, script, rid) for rid in covered)
    assert delivered == sum(_events(before, script, rid) for rid in covered if outcomes[rid])


def _events(before: list[int], script: list[tuple[object, ...]], rid: int) -> int:
    """The events of record ``rid`` (ids: ``before`` first, then each "record" step)."""
    sizes = list(before) + [int(s[1]) for s in script if s[0] == "record"]  # type: ignore[arg-type]
    return sizes[rid - 1]
