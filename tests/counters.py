"""README's promise about the counters, as tests check it.

README documents one identity between the counters of an idle buffer. Tests evaluate the
identity README states, read from README itself, so that the documentation and the counters
can only change together.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

from firehose_buffer import BufferStats

README = Path(__file__).resolve().parent.parent / "README.md"
_IDENTITY = re.compile(r"`(events_put\s*==\s*[a-z_+\s]+)`")


def documented_identity() -> tuple[list[str], list[str]]:
    """README's identity as (left-hand counters, right-hand counters), each side a sum."""
    text = README.read_text(encoding="utf-8")
    found = _IDENTITY.search(text)
    if found is None:
        raise AssertionError("README documents no identity of the form `events_put == ...`")
    left, right = found.group(1).split("==")
    return ([name.strip() for name in left.split("+")],
            [name.strip() for name in right.split("+")])


def counters(stats: BufferStats) -> dict[str, int]:
    """The integer counters of a BufferStats, by name (what child processes report)."""
    return {f.name: value for f in dataclasses.fields(stats)
            if isinstance(value := getattr(stats, f.name), int)}


def identity_gap(values: Mapping[str, int]) -> str | None:
    """None when README's identity holds for ``values``, else what each side adds up to."""
    left, right = documented_identity()
    lhs, rhs = sum(values[n] for n in left), sum(values[n] for n in right)
    if lhs == rhs:
        return None
    shown = ", ".join(f"{n}={values[n]}" for n in dict.fromkeys(left + right))
    return f"README's {' + '.join(left)} == {' + '.join(right)} fails: {lhs} != {rhs} ({shown})"
