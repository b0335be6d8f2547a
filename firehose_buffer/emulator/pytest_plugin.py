"""pytest plugin: the ``local_firehose`` fixtures (registered via the ``pytest11`` entry point).

``local_firehose`` is a started :class:`LocalFirehose` (function scope) delivering into
``tmp_path / "firehose"``, with ``keep_records=True`` so tests can compare
``accepted_records`` with ``delivered_lines``; it is stopped after the test.
``local_firehose_tls`` is the same over HTTPS (``tls=True``): trust its ``ca_file``
(``AWS_CA_BUNDLE``, or ``verify=`` for boto3); it needs the ``emulator-tls`` extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import LocalFirehose


@pytest.fixture
def local_firehose(tmp_path: Path) -> Iterator[LocalFirehose]:
    """A started local Firehose with no streams, stopped after the test."""
    with LocalFirehose(port=0, data_dir=tmp_path / "firehose", keep_records=True) as fh:
        yield fh


@pytest.fixture
def local_firehose_tls(tmp_path: Path) -> Iterator[LocalFirehose]:
    """A started local Firehose over HTTPS with no streams, stopped after the test."""
    with LocalFirehose(port=0, data_dir=tmp_path / "firehose", keep_records=True,
                       tls=True) as fh:
        yield fh
