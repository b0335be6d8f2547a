"""Running a scenario in a child Python process, for tests whose failure is a hang, a crash or
a signal: the child dumps every thread's stack and exits at its deadline, so a deadlock fails
the test with the stacks instead of hanging pytest.

The child runs ``python -c SCRIPT`` with the repository and ``tests/`` on ``PYTHONPATH`` and
fake AWS credentials; it reports by printing one JSON object as its last line of stdout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

#: Prepended to every child script: the deadline is argv[1], removed before the script runs.
#: ``heartbeat(seconds)`` replaces it: a script that calls it as it makes progress fails as
#: soon as it stops for that long, instead of at the deadline.
_PREAMBLE = """\
import faulthandler as _faulthandler, sys as _sys, time as _time
_faulthandler.dump_traceback_later(float(_sys.argv.pop(1)), exit=True)
_beat = [0.0, 0.0]

def heartbeat(seconds=5.0):
    now = _time.monotonic()
    if now >= _beat[0] or seconds != _beat[1]:  # re-arming costs ~50 us: twice a second
        _beat[0] = now + 0.5  # (no container allocated: a test may have armed the collector)
        _beat[1] = seconds
        _faulthandler.dump_traceback_later(seconds, exit=True)

"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def run_child(script: str, *args: str, deadline: float) -> Any:
    """Run ``script`` with ``args`` (``sys.argv[1:]``) and return its last stdout line, parsed.

    Fails the test, with every thread's stack, if the child is still running after
    ``deadline`` seconds (or stops calling ``heartbeat()`` for as long as it asked); and with
    its stderr if it exits non-zero or dies from a signal.
    """
    done = subprocess.run(
        [sys.executable, "-c", _PREAMBLE + script, str(deadline), *args],
        env=child_env(), capture_output=True, text=True, timeout=deadline + 30, check=False,
    )
    if "Timeout (" in done.stderr and done.returncode == 1:
        pytest.fail(f"the child hung (no progress in time, or past its {deadline} s "
                    f"deadline); its threads:\n{_stacks(done.stderr)}")
    if done.returncode != 0:
        pytest.fail(f"the child exited with status {done.returncode}:\n{done.stderr[-4000:]}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        pytest.fail(f"the child printed no result:\n{done.stderr[-4000:]}")
    return orjson.loads(lines[-1])


def _stacks(stderr: str) -> str:
    """faulthandler's dump, without the log lines printed before it."""
    start = stderr.find("Timeout (")
    return stderr[start:][-6000:]
