"""Plots (SVG) and tables for the Performance page, drawn from a ``benchmarks/run.py`` JSON.

Rows are found by the start of their ``figure`` name; a row that is missing is reported to
``warn`` (which fails a strict build), so a renamed benchmark cannot leave a stale plot.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.report import fmt_num

Row = dict[str, Any]
Warn = Callable[[str], None]

ACCENT = "#3f51b5"   # the site's indigo
PEER = "#9e9e9e"
FLOOR = "#2e7d32"
GOAL = "#c62828"

plt.rcParams.update({
    "svg.hashsalt": "firehose-buffer-docs",   # stable ids: the same JSON makes the same SVG
    "svg.fonttype": "none",                   # text stays text, in the page's own font
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
})


class Rows:
    def __init__(self, rows: Sequence[Row], warn: Warn) -> None:
        self._rows = rows
        self._warn = warn

    def one(self, prefix: str) -> Row | None:
        for row in self._rows:
            if row["figure"].startswith(prefix) and _number(row["measured"]):
                return row
        self._warn(f"benchmark JSON has no usable row starting with {prefix!r}")
        return None

    def all(self, test: Callable[[Row], bool]) -> list[Row]:
        return [r for r in self._rows if test(r) and _number(r["measured"])]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def _svg(fig: plt.Figure) -> str:
    out = io.StringIO()
    fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return out.getvalue()


def _barh(ax: plt.Axes, labels: list[str], values: list[float], colors: list[str],
          texts: list[str]) -> None:
    positions = list(range(len(labels)))[::-1]
    ax.barh(positions, values, color=colors, height=0.6)
    ax.set_yticks(positions, labels)
    top = max(values) if values else 1.0
    for y, value, text in zip(positions, values, texts, strict=True):
        ax.text(value + top * 0.01, y, text, va="center", fontsize=9)
    ax.set_xlim(0, top * 1.25)


def billed(rows: Rows) -> str | None:
    """Billed bytes over raw bytes: packed records against one event per record."""
    labels: list[str] = []
    values: list[float] = []
    colors: list[str] = []
    for rate in ("500", "4000"):
        row = rows.one(f"7. billed/raw, mixed 0.5-4 KB, {rate} ev/s")
        if row is None:
            continue
        labels += [f"firehose_buffer, {int(rate):,} events/s",
                   f"one event per record, {int(rate):,} events/s"]
        values += [row["measured"], row["reference"]]
        colors += [ACCENT, PEER]
    for design, label in (("put_record", "PutRecord per event"),
                          ("put_record_batch", "PutRecordBatch, one event per record")):
        row = rows.one(f"8. billed/raw: library vs {design}")
        if row is None:
            continue
        if design == "put_record":
            labels.append("firehose_buffer, end to end")
            values.append(row["measured"])
            colors.append(ACCENT)
        labels.append(label + ", end to end")
        values.append(row["reference"])
        colors.append(PEER)
    if not values:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(values) + 1.0))
    _barh(ax, labels, values, colors, [f"{v:.4f}" if v < 1.1 else f"{v:.2f}" for v in values])
    ax.axvline(1.0, color=FLOOR, linestyle="--", linewidth=1)
    ax.set_xlabel("billed bytes / raw bytes (1.0: every byte billed once)")
    ax.set_title("What Firehose bills per byte sent (mixed 0.5-4 KB events)", loc="left")
    return _svg(fig)


def _short(figure: str) -> str:
    return re.sub(r"^\d+\.\s*", "", figure)


def _cpu_label(figure: str) -> str:
    if figure.startswith("lead: PutRecordBatch"):
        return "stock botocore, 4 MB batch"
    if figure.startswith("lead: same"):
        return "botocore + the library's request body, 4 MB batch"
    if figure.startswith("transport: "):
        size, _, kind = figure.removeprefix("transport: ").rpartition(", ")
        kind = {"lean": "lean transport",
                "botocore+fastbody": "botocore + the library's body"}.get(kind, kind)
        return f"{kind}, {size}" if size else kind
    if "library CPU per byte" in figure:
        return "the whole library, " + _short(figure).split(":")[0]
    return _short(figure)


def cpu(rows: Rows) -> str | None:
    """CPU per byte, each against the base64 + SHA-256 floor measured in the same group."""
    chosen = rows.all(lambda r: r["unit"] == "CPU ns/byte" and _number(r["reference"]))
    if not chosen:
        rows.one("transport: 4 MiB batch, lean")  # reports the absence
        return None
    labels = [_cpu_label(r["figure"]) for r in chosen]
    values = [r["measured"] / r["reference"] for r in chosen]
    texts = [f"{v:.2f}x ({r['measured']:.2f} ns/byte)" for v, r in zip(values, chosen,
                                                                       strict=True)]
    colors = [ACCENT if "library" in r["figure"] or "lean" in r["figure"] else PEER
              for r in chosen]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(values) + 1.2))
    _barh(ax, labels, values, colors, texts)
    ax.axvline(1.0, color=FLOOR, linestyle="--", linewidth=1, label="floor: base64 + SHA-256")
    ax.axvline(2.0, color=GOAL, linestyle=":", linewidth=1, label="goal for the library")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.set_xlabel("CPU per byte / the floor's CPU per byte, measured in the same run")
    ax.set_title("CPU per byte sent, against the floor", loc="left")
    return _svg(fig)


def freshness(rows: Rows) -> str | None:
    """Put-to-acknowledged age at p50 and p99, against linger and the goal."""
    p50 = rows.one("6. freshness p50")
    p99 = rows.one("6. freshness p99")
    if p50 is None or p99 is None:
        return None
    linger = p99["reference"] or 1.0
    fig, ax = plt.subplots(figsize=(6, 2.2))
    _barh(ax, ["p50", "p99"], [p50["measured"], p99["measured"]], [ACCENT, ACCENT],
          [f"{p50['measured']:.2f} s", f"{p99['measured']:.2f} s"])
    ax.axvline(linger, color=FLOOR, linestyle="--", linewidth=1,
               label=f"linger_seconds ({linger:g} s)")
    ax.axvline(linger + 1, color=GOAL, linestyle=":", linewidth=1, label="goal for p99")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.set_xlim(0, max(linger + 1.3, p99["measured"] * 1.25))
    ax.set_xlabel("seconds from put() to Firehose's acknowledgement (oldest event of a record)")
    ax.set_title("Freshness at 16 MB/s over 16 standard streams", loc="left")
    return _svg(fig)


def throughput(rows: Rows) -> str | None:
    """Offered and delivered MB/s, and the backlog, over the steady-load run."""
    row = rows.one("4. 16x1 MiB/s")
    if row is None:
        return None
    load = row.get("details", {}).get("load", {})
    samples = load.get("backlog_samples") or []
    steps = load.get("steps") or []
    if len(samples) < 3 or not steps:
        rows._warn("the steady-load row has no backlog samples to plot")
        return None
    times = [s[0] for s in samples]
    # Delivered MB/s over the last second (acknowledgements come in batches: per sample the
    # rate would jump between zero and twice the offered load).
    rate = []
    for i, (t, _, sent) in enumerate(samples):
        j = i
        while j > 0 and t - samples[j - 1][0] <= 1.0 + 1e-9:
            j -= 1
        t0, _, sent0 = samples[j]
        rate.append((sent - sent0) / (t - t0) / 1e6 if t > t0 else 0.0)
    backlog = [s[1] / 1e6 for s in samples]
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    ax.plot(times, rate, color=ACCENT, label="delivered, MB/s (last second)")
    ax.axhline(steps[0]["offered_mb_s"], color=PEER, linestyle="--", linewidth=1,
               label="offered, MB/s")
    ax.plot(times, backlog, color=FLOOR, label="backlog in memory, MB")
    ax.set_xlabel("seconds")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.set_title("Steady load: 4,000 events/s of 4 KB on 16 standard streams", loc="left")
    return _svg(fig)


def latency(rows: Rows) -> str | None:
    """put()'s cost to the caller against orjson.dumps, and its latency under load."""
    small = rows.one("1. put() 512 B event")
    large = rows.one("1. put() 4096 B event")
    pcts = [rows.one(f"6. put() {p} under load") for p in ("p50", "p99", "p99.9")]
    if small is None or large is None or any(p is None for p in pcts):
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3), gridspec_kw={"wspace": 0.45})
    names = ["0.5 KB", "4 KB"]
    xs = range(len(names))
    puts = [small["measured"], large["measured"]]
    dumps = [small["reference"], large["reference"]]
    left.bar([x - 0.2 for x in xs], dumps, width=0.4, color=PEER, label="orjson.dumps alone")
    left.bar([x + 0.2 for x in xs], puts, width=0.4, color=ACCENT, label="put()")
    for x, p, d in zip(xs, puts, dumps, strict=True):
        left.text(x + 0.2, p, f"{p / d:.1f}x", ha="center", va="bottom", fontsize=8)
    left.set_xticks(list(xs), names)
    left.set_ylabel("ns per event, caller's thread")
    left.legend(frameon=False, fontsize=8)
    left.set_title("put() against a bare dumps", loc="left")
    values = [p["measured"] for p in pcts if p is not None]
    right.bar(["p50", "p99", "p99.9"], values, color=ACCENT)
    right.set_yscale("log")
    for i, v in enumerate(values):
        right.text(i, v, f"{v:.1f} µs", ha="center", va="bottom", fontsize=8)
    right.axhline(1000, color=GOAL, linestyle=":", linewidth=1, label="goal for p99: 1 ms")
    right.axhline(5000, color=GOAL, linestyle="--", linewidth=1, label="goal for p99.9: 5 ms")
    right.set_ylim(top=100_000)
    right.legend(loc="upper left", frameon=False, fontsize=8)
    right.set_ylabel("µs (log scale)")
    right.set_title("put() latency, 4 threads at 16 MB/s", loc="left")
    return _svg(fig)


def threads(rows: Rows) -> str | None:
    """put() events/s from 1, 2, 4 and 8 threads."""
    row = rows.one("2. put() from 8 threads")
    rates = (row or {}).get("details", {}).get("rates")
    if not rates:
        return None
    counts = sorted(rates, key=int)
    values = [rates[c] / 1e6 for c in counts]
    fig, ax = plt.subplots(figsize=(5, 2.4))
    ax.bar(counts, values, color=ACCENT)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v / values[0]:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("producer threads")
    ax.set_ylabel("million events/s")
    ax.set_title("put() from several threads (0.5 KB events)", loc="left")
    return _svg(fig)


PLOTS: dict[str, Callable[[Rows], str | None]] = {
    "billed.svg": billed,
    "cpu.svg": cpu,
    "freshness.svg": freshness,
    "throughput.svg": throughput,
    "latency.svg": latency,
    "threads.svg": threads,
}


def draw(data: dict[str, Any], warn: Warn) -> dict[str, str]:
    rows = Rows(data.get("rows", []), warn)
    out = {}
    for name, plot in PLOTS.items():
        svg = plot(rows)
        if svg is not None:
            out[name] = svg
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(data: dict[str, Any]) -> str:
    out = ["| figure | measured | reference | ratio | goal | met? |",
           "|---|---|---|---|---|---|"]
    for r in data.get("rows", []):
        ref = (f"{fmt_num(r['reference'])} ({r['reference_label']})"
               if r.get("reference") is not None else "-")
        ratio = f"{r['ratio']:.3f}x" if r.get("ratio") is not None else "-"
        met = {True: "yes", False: "NO", None: "info"}[r.get("met")]
        measured = (f"{fmt_num(r['measured'])} {r['unit']}" if _number(r["measured"])
                    else f"- {r.get('notes', '')}")
        out.append(f"| {_cell(r['figure'])} | {_cell(measured)} | {_cell(ref)} | {ratio} "
                   f"| {_cell(r.get('goal') or '-')} | {met} |")
    return "\n".join(out)


def provenance(data: dict[str, Any]) -> str:
    """Where the figures come from: the run's command, machine and date."""
    meta = data.get("meta", {})
    when = meta.get("unix_time")
    date = datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%d") if when else "unknown"
    python = str(meta.get("python", "?")).split(" ")[0]
    lines = [
        f"- **Run**: `{meta.get('command', '?')}` on {date}, Python {python}, "
        f"{meta.get('cpus', '?')} CPUs, `{meta.get('platform', '?')}`.",
    ]
    if meta.get("quick"):
        lines.append("- **This is a `--quick` run**: every benchmark ran for a short time "
                     "(seconds, not minutes), so the figures are noisier and some loads are "
                     "lighter than in a full run (`tox -e bench`).")
    missed = meta.get("missed_goals") or []
    crashed = meta.get("crashed") or []
    lines.append(f"- {len(data.get('rows', []))} figures; {len(missed)} goals missed"
                 + (f"; crashed: {', '.join(crashed)}" if crashed else "") + ".")
    return "\n".join(lines)
