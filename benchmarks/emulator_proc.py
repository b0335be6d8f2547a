"""The emulator in its own process, and what /proc says about a process's CPU."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from firehose_buffer.emulator import EmulatorControl, Stats

#: Fake credentials: everything stays on 127.0.0.1.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int | str = "self", task: int | None = None) -> float:
    """User + system CPU of a process (or one of its threads) from /proc."""
    path = f"/proc/{pid}/task/{task}/stat" if task is not None else f"/proc/{pid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class EmulatorProcess:
    """``python -m firehose_buffer.emulator --port 0`` with delivery into a scratch dir
    (in /dev/shm when there is one, so disk speed does not enter the figures). With
    ``--tls`` among the options, ``ca_file`` is the CA a client must trust (and
    :meth:`client_env` sets ``AWS_CA_BUNDLE`` to it)."""

    def __init__(self, streams: list[str], quota: str = "standard", *extra: str) -> None:
        base = "/dev/shm" if Path("/dev/shm").is_dir() else None
        self.data_dir = Path(tempfile.mkdtemp(prefix="fb-bench-", dir=base))
        self._args = [
            sys.executable, "-m", "firehose_buffer.emulator", "--port", "0",
            "--streams", ",".join(streams), "--quota", quota,
            # Checking signatures costs the emulator a SHA-256 of every body; the figures
            # measure the client, and the tests check the signatures.
            "--data-dir", str(self.data_dir), "--no-verify-signatures", *extra,
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint_url = ""
        self.ca_file: str | None = None

    def __enter__(self) -> EmulatorProcess:
        self.proc = subprocess.Popen(
            self._args, stdout=subprocess.PIPE, text=True, env={**os.environ, **AWS_ENV}
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.endpoint_url = line.removeprefix("listening on ")
        if "--tls" in self._args:
            ca_line = self.proc.stdout.readline().strip()
            if not ca_line.startswith("ca file: "):
                self.proc.kill()
                raise RuntimeError(f"emulator printed no CA file: {ca_line!r}")
            self.ca_file = ca_line.removeprefix("ca file: ")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def control(self) -> EmulatorControl:
        return EmulatorControl(self.endpoint_url, ca_file=self.ca_file)

    def client_env(self) -> dict[str, str]:
        """What a client process needs in its environment to trust this emulator."""
        return {"AWS_CA_BUNDLE": self.ca_file} if self.ca_file else {}

    def stats(self) -> Stats:
        return self.control.stats()

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return proc_cpu_seconds(self.proc.pid)
