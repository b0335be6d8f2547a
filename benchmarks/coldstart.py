"""Cold start: ``import firehose_buffer`` and building a FirehoseBuffer in a fresh process.

What a Lambda pays once per execution environment. Each figure is the median over fresh
``python`` processes (imports are never warm in-process), against references measured in
the same run: an empty interpreter and ``import botocore.session`` (the floor for anything
that signs with botocore's credential chain). No request is sent: the buffer is built and
closed with nothing in it, so no emulator is needed.

    python benchmarks/coldstart.py [--quick] [--importtime]

``--importtime`` prints the slowest modules under ``import firehose_buffer`` (``-X
importtime``), to see what the cost is made of.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.emulator_proc import AWS_ENV  # noqa: E402
from benchmarks.report import Row  # noqa: E402

# Each child prints the seconds it spent in the part under test, measured from inside, so
# interpreter start-up is not counted twice; the "process" figures count it.
_PROBE = """
import time, json
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
{build}
t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1]))
"""

_BUILD = (
    "b = FirehoseBuffer(BufferConfig(streams=('s1', 's2'), {endpoint}region='us-east-1'))\n"
    "b.close(timeout=1)"
)

#: name -> (imports, build)
CASES: dict[str, tuple[str, str]] = {
    "python -c pass": ("", ""),
    "import botocore.session": ("import botocore.session", ""),
    "import boto3": ("import boto3", ""),
    "import firehose_buffer": ("import firehose_buffer", ""),
    "build, endpoint_url given": (
        "from firehose_buffer import BufferConfig, FirehoseBuffer",
        _BUILD.format(endpoint="endpoint_url='http://127.0.0.1:9', ")),
    "build, regional endpoint": (
        "from firehose_buffer import BufferConfig, FirehoseBuffer",
        _BUILD.format(endpoint="")),
}


def _env() -> dict[str, str]:
    env = {**os.environ, **AWS_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("AWS_ENDPOINT_URL_FIREHOSE", None)
    return env


def _once(imports: str, build: str, env: dict[str, str]) -> tuple[float, float, float]:
    """(import seconds, build seconds, whole process wall seconds) of one fresh process."""
    import time  # noqa: PLC0415

    code = _PROBE.format(imports=imports, build=build)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    wall = time.perf_counter() - started
    imported, built = json.loads(out.strip().splitlines()[-1])
    return imported, built, wall


def measure(runs: int) -> dict[str, tuple[float, float, float]]:
    """Medians per case. The cases are interleaved run by run so a burst of load from
    elsewhere on the machine lands on all of them alike."""
    env = _env()
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CASES}
    for _ in range(runs):
        for name, (imports, build) in CASES.items():
            samples[name].append(_once(imports, build, env))
    return {name: tuple(statistics.median(s[i] for s in got) for i in range(3))  # type: ignore[misc]
            for name, got in samples.items()}


def run(quick: bool) -> list[Row]:
    runs = 5 if quick else 15
    m = measure(runs)
    empty = m["python -c pass"][2]
    boto_floor = m["import botocore.session"][0]
    rows = [
        Row("coldstart: python -c pass", empty * 1e3, "ms wall", notes=f"median of {runs}"),
        Row("coldstart: import botocore.session", boto_floor * 1e3, "ms",
            notes="the floor for botocore's credential chain and signer"),
        Row("coldstart: import boto3", m["import boto3"][0] * 1e3, "ms", boto_floor * 1e3,
            "import botocore.session"),
        Row("coldstart: import firehose_buffer", m["import firehose_buffer"][0] * 1e3, "ms",
            boto_floor * 1e3, "import botocore.session"),
    ]
    for name in ("build, endpoint_url given", "build, regional endpoint"):
        imported, built, wall = m[name]
        rows.append(Row(f"coldstart: FirehoseBuffer(...) {name.removeprefix('build, ')}",
                        built * 1e3, "ms", notes="construction plus close() of an empty buffer"))
        rows.append(Row(f"coldstart: process, import + {name}", wall * 1e3, "ms wall", empty * 1e3,
                        "python -c pass", notes=f"import {imported * 1e3:.0f} ms + build "
                        f"{built * 1e3:.0f} ms + interpreter"))
    return rows


def _importtime(top: int = 25) -> None:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import firehose_buffer"],
                         env=_env(), check=True, capture_output=True, text=True).stderr
    parsed = []
    for line in err.splitlines()[1:]:
        self_us, cumulative, name = line.split("|")
        parsed.append((int(cumulative), int(self_us.split(":")[-1]), name.rstrip()))
    for cumulative, self_us, name in sorted(parsed, reverse=True)[:top]:
        print(f"{cumulative / 1e3:8.1f} ms cumulative {self_us / 1e3:7.1f} ms self  {name}")


if __name__ == "__main__":
    from benchmarks.report import table

    if "--importtime" in sys.argv:
        _importtime()
    else:
        print(table(run("--quick" in sys.argv)))
