"""What a buffer finds in its spool directory and sends again, through one path (the replay,
``_runtime/replayer.py``): spool files, and the durable segments of processes that died.

Each is a :class:`Source` that can be claimed (a lock taken: ``flock`` on a spool file,
``lockf`` on a dead owner's lock file), so that two processes sharing the directory never
send the same one twice; a claim hands over its lines by stream, and is removed once every
line has an outcome (or released, to be claimed again by a later run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

from .durable import dead_owners
from .spool import pending_files


class Claimed(Protocol):
    """A source held by this process until removed or released."""

    label: str
    #: Whether each line must be checked before it is sent (spool files can be edited by
    #: hand; durable segments hold only what put() checked). When False, ``pieces`` hands
    #: over blocks of several whole lines.
    validate: bool

    def pieces(self) -> Iterator[tuple[str, list[bytes]]]:
        """The stream each group of lines was meant for, and the lines (each element one
        whole line, or several when ``validate`` is False)."""
        ...

    @property
    def torn(self) -> int:
        """Lines cut short by a death, dropped (known once ``pieces`` is exhausted)."""
        ...

    @property
    def possible_duplicates(self) -> int:
        """Lines that may have reached Firehose already (in flight at the death)."""
        ...

    def remove(self) -> None: ...

    def release(self) -> None: ...


class Source(Protocol):
    """Something found under a spool directory to send again (a spool file, a dead
    process's durable segments), which one process at a time may claim."""

    @property
    def label(self) -> str: ...

    def claim(self) -> Claimed | None:
        """Take it for this process, or None if another has it (or it is gone)."""
        ...


def found(directory: str | os.PathLike[str]) -> list[Source]:
    """Everything under a spool directory to send again: spool files (oldest first), then
    the segments of dead processes."""
    return [*pending_files(directory), *dead_owners(directory)]
