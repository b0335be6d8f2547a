"""Before and after, in the same run: each tree's own benchmarks, interleaved.

    python -m benchmarks.compare [--baseline REV] [--quick] [--rounds N] [--groups a,b]
                                 [--output FILE]

Checks REV (default ``536cdf4``, the commit before the package was restructured) out into a
temporary git worktree (removed afterwards, whatever happens), then runs, round after round,
each tree's OWN ``benchmarks/run.py --only GROUP`` in a subprocess whose working directory
and ``PYTHONPATH`` are that tree, so the library, the benchmark code and the emulator are that
tree's: baseline then current for each group, the order swapped every round (ABBA) so that
neither tree always runs first. The groups are the ones that say whether a change made the
library slower: ``hot_path`` (put()), ``packer`` (``Scheduler.tick`` and the cut),
``cost`` (billed/raw) and ``end_to_end`` (CPU per byte at 16 MB/s). "Current" is this working
tree as it is on disk (uncommitted changes included).

Prints one table: per figure, the median of each tree's measured values, after/before, and
the same for the figure's ratio to the reference measured in the same process (e.g. put()
over ``orjson.dumps``), which cancels most of a busy machine's drift. A verdict column says
"worse" or "better" where the unit says which way is better and the change passes
``--threshold`` (default 10%: on a shared 2-core machine, single runs vary by about that).

As a group of ``benchmarks/run.py`` (``--only compare``, not run by default: even ``--quick``
runs four groups twice) it returns one row per figure, after against before.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import Row

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "536cdf4"
GROUPS = ("hot_path", "packer", "cost", "end_to_end")
#: Units whose smaller values are better, and those whose larger values are.
LOWER_IS_BETTER = {"ns/event", "faults/event", "CPU ns/byte", "CPU s/GB", "of one core", "us",
                   "s", "MiB", "MB", "events", "", "CPU ns/raw B"}
HIGHER_IS_BETTER = {"MB/s", "events/s"}


@dataclass
class Figure:
    group: str
    name: str
    unit: str = ""
    measured: dict[str, list[float]] = field(default_factory=lambda: {"before": [],
                                                                     "after": []})
    ratio: dict[str, list[float]] = field(default_factory=lambda: {"before": [], "after": []})
    reference_label: str = ""


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@contextmanager
def baseline_tree(rev: str) -> Iterator[tuple[Path, str]]:
    """A detached worktree of ``rev`` in a temporary directory; removed on the way out."""
    sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    parent = Path(tempfile.mkdtemp(prefix="fb-compare-"))
    tree = parent / "baseline"
    _git("worktree", "add", "--detach", "--quiet", str(tree), sha)
    try:
        yield tree, sha
    finally:
        try:
            _git("worktree", "remove", "--force", str(tree))
        except RuntimeError as exc:
            print(f"compare: {exc}", file=sys.stderr)
        shutil.rmtree(parent, ignore_errors=True)
        _git("worktree", "prune")


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports(tree: Path) -> None:
    """The tree's own library and benchmarks are the ones imported there, not the installed
    (editable) copy."""
    probe = ("import firehose_buffer, benchmarks, sys; "
             "print(firehose_buffer.__file__); print(benchmarks.__file__)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tree, env=_env(tree),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{sys.executable} cannot import the {tree.name} tree's library "
                           f"(its dependencies installed?):\n{done.stderr[-2000:]}")
    for path in done.stdout.split():
        if not Path(path).resolve().is_relative_to(tree.resolve()):
            raise RuntimeError(f"{tree}: imported {path} from outside the tree")


def run_group(tree: Path, group: str, quick: bool, scratch: Path) -> list[dict[str, Any]]:
    """One group of the tree's own run.py, in a fresh process; its rows as JSON."""
    out = scratch / f"{group}-{time.monotonic_ns()}.json"
    args = [sys.executable, "benchmarks/run.py", "--only", group, "--output", str(out)]
    if quick:
        args.append("--quick")
    done = subprocess.run(args, cwd=tree, env=_env(tree), capture_output=True, text=True,
                          timeout=1800, check=False)
    if not out.exists():
        raise RuntimeError(f"{group} in {tree.name} wrote nothing ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    rows: list[dict[str, Any]] = json.loads(out.read_text())["rows"]
    if done.returncode != 0:
        print(f"compare: {group} crashed in the {tree.name} tree:\n{done.stderr[-3000:]}",
              file=sys.stderr)
    return rows


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def compare(baseline: str, groups: tuple[str, ...], rounds: int, quick: bool,
            log: Any = sys.stderr) -> tuple[str, list[Figure]]:
    figures: dict[tuple[str, str], Figure] = {}
    with baseline_tree(baseline) as (before_tree, sha), \
            tempfile.TemporaryDirectory(prefix="fb-compare-out-") as scratch_dir:
        scratch = Path(scratch_dir)
        trees = {"before": before_tree, "after": ROOT}
        for tree in trees.values():
            check_imports(tree)
        for r in range(rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for group in groups:
                for side in order:
                    t0 = time.perf_counter()
                    rows = run_group(trees[side], group, quick, scratch)
                    print(f"[compare] round {r + 1}/{rounds} {group} {side}: "
                          f"{time.perf_counter() - t0:.1f} s", file=log, flush=True)
                    for row in rows:
                        key = (group, row["figure"])
                        fig = figures.setdefault(key, Figure(group, row["figure"], row["unit"]))
                        fig.reference_label = row.get("reference_label") or fig.reference_label
                        if _finite(row["measured"]):
                            fig.measured[side].append(float(row["measured"]))
                        if _finite(row.get("ratio")):
                            fig.ratio[side].append(float(row["ratio"]))
    return sha, list(figures.values())


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _change(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return after / before


def verdict(fig: Figure, threshold: float) -> str:
    """'worse'/'better' when the unit says which way is better and the change of the
    measured median passes the threshold; '~' within it; '-' when it cannot say."""
    change = _change(_median(fig.measured["before"]), _median(fig.measured["after"]))
    if change is None:
        return "-"
    if fig.unit in HIGHER_IS_BETTER:
        change = 1 / change if change else math.inf
    elif fig.unit not in LOWER_IS_BETTER:
        return "-"
    if change > 1 + threshold:
        return "worse"
    if change < 1 / (1 + threshold):
        return "better"
    return "~"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01 or magnitude == 0:
        return f"{value:.4g}"
    return f"{value:.2e}"


def table(figures: list[Figure], threshold: float) -> str:
    header = ("figure", "unit", "before", "after", "after/before", "x ref before",
              "x ref after", "verdict", "n")
    lines = []
    for fig in figures:
        mb, ma = _median(fig.measured["before"]), _median(fig.measured["after"])
        rb, ra = _median(fig.ratio["before"]), _median(fig.ratio["after"])
        change = _change(mb, ma)
        lines.append((
            f"{fig.group}: {fig.name}", fig.unit, _fmt(mb), _fmt(ma),
            f"{change:.3f}x" if change is not None else "-", _fmt(rb), _fmt(ra),
            verdict(fig, threshold), f"{len(fig.measured['before'])}/{len(fig.measured['after'])}",
        ))
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=False)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out.extend(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(out)


def rows(figures: list[Figure], sha: str, threshold: float) -> list[Row]:
    out = []
    for fig in figures:
        mb, ma = _median(fig.measured["before"]), _median(fig.measured["after"])
        rb, ra = _median(fig.ratio["before"]), _median(fig.ratio["after"])
        notes = f"verdict {verdict(fig, threshold)}"
        if rb is not None or ra is not None:
            notes += f"; x {fig.reference_label or 'reference'}: {_fmt(rb)} -> {_fmt(ra)}"
        out.append(Row(
            f"cmp. {fig.group}: {fig.name}", ma if ma is not None else float("nan"), fig.unit,
            mb, f"baseline {sha[:7]}", notes=notes,
            details={"before": fig.measured["before"], "after": fig.measured["after"],
                     "ratio_before": fig.ratio["before"], "ratio_after": fig.ratio["after"]},
        ))
    return out


def run(quick: bool) -> list[Row]:
    """The ``compare`` group of ``benchmarks/run.py``: one round with ``--quick``, else 3."""
    sha, figures = compare(DEFAULT_BASELINE, GROUPS, 1 if quick else 3, quick)
    return rows(figures, sha, 0.10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision (before)")
    parser.add_argument("--quick", action="store_true", help="each group's --quick mode")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of every group on both trees (default 1 quick, else 3)")
    parser.add_argument("--groups", default=",".join(GROUPS),
                        help="groups of benchmarks/run.py, as each tree names them")
    parser.add_argument("--threshold", type=float, default=0.10,
                        help="relative change the verdict calls worse/better")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    rounds = args.rounds or (1 if args.quick else 3)
    started = time.perf_counter()
    sha, figures = compare(args.baseline, groups, rounds, args.quick)
    print(f"before: {args.baseline} ({sha[:12]}); after: this working tree; "
          f"{rounds} round(s){' (quick)' if args.quick else ''}; medians")
    print(table(figures, args.threshold))
    print(f"\n{time.perf_counter() - started:.0f} s")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({
            "baseline": sha, "rounds": rounds, "quick": args.quick, "groups": groups,
            "figures": [{"group": f.group, "figure": f.name, "unit": f.unit,
                         "before": f.measured["before"], "after": f.measured["after"],
                         "ratio_before": f.ratio["before"], "ratio_after": f.ratio["after"],
                         "verdict": verdict(f, args.threshold)} for f in figures],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
