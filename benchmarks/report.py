"""One row per figure, printed as one table and written as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class Row:
    """``ratio`` is measured / reference; ``met`` is None when the figure has no goal."""

    figure: str
    measured: float
    unit: str
    reference: float | None = None
    reference_label: str = ""
    goal: str = ""
    met: bool | None = None
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.reference is None or self.reference == 0:
            return None
        return self.measured / self.reference

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


def fmt_num(value: float | None) -> str:
    """A figure as the tables print it (also the docs site's table)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.5g}"
    return f"{value:.2e}"


def table(rows: list[Row]) -> str:
    header = ("figure", "measured", "reference", "ratio", "goal", "met?")
    lines = [
        (
            r.figure,
            f"{fmt_num(r.measured)} {r.unit}",
            f"{fmt_num(r.reference)} ({r.reference_label})" if r.reference is not None else "-",
            f"{r.ratio:.3f}x" if r.ratio is not None else "-",
            r.goal or "-",
            {True: "yes", False: "NO", None: "info"}[r.met],
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=False)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out.extend(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(out)


def write_json(path: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": [r.to_json() for r in rows]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as README shows it, from the JSON ``run.py --output`` wrote."""
    out = ["| figure | measured | reference | ratio | goal | met? |", "|---|---|---|---|---|---|"]
    for r in rows:
        ref = f"{fmt_num(r['reference'])} ({r['reference_label']})" if r["reference"] is not None \
            else "-"
        ratio = f"{r['ratio']:.3f}x" if r["ratio"] is not None else "-"
        met = {True: "yes", False: "NO", None: "info"}[r["met"]]
        out.append(f"| {r['figure']} | {fmt_num(r['measured'])} {r['unit']} | {ref} | {ratio} "
                   f"| {r['goal'] or '-'} | {met} |")
    return "\n".join(out)


if __name__ == "__main__":  # python benchmarks/report.py bench-results/latest.json
    import sys

    print(markdown(json.loads(Path(sys.argv[1]).read_text())["rows"]))
