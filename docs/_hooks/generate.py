"""MkDocs hook: what the site generates at build time, so it cannot drift from the code.

- ``<!-- generated: config-table -->``: every ``BufferConfig`` field, from the dataclass and
  the ``#:`` comment above each field (a field without one fails a strict build).
- ``<!-- generated: cli-reference -->``: every subcommand of ``firehose-buffer``, from the
  parsers ``firehose_buffer.cli.build_parser()`` returns.
- ``<!-- generated: benchmark-provenance -->`` and ``<!-- generated: benchmark-table -->``,
  and the SVG plots under ``performance/``: from ``docs/data/benchmarks.json``, the JSON
  ``python benchmarks/run.py --output FILE`` writes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.plugins import get_plugin_logger
from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).parent))
# The repository root: the plots format figures as benchmarks/report.py does.
sys.path.insert(0, str(Path(__file__).parents[2]))

import benchmark_plots
import cli_reference
import config_reference

log = get_plugin_logger("firehose_buffer_docs")

BENCHMARKS = "data/benchmarks.json"
PLOT_DIR = "performance"
_MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


def _benchmarks(config: Any) -> dict[str, Any]:
    path = Path(config["docs_dir"]) / BENCHMARKS
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {"meta": {}, "rows": []}
    return data


def on_files(files: Files, config: Any) -> Files:
    for name, svg in benchmark_plots.draw(_benchmarks(config), log.warning).items():
        files.append(File.generated(config, f"{PLOT_DIR}/{name}", content=svg))
    return files


def _expand(name: str, config: Any) -> str:
    if name == "config-table":
        return config_reference.table(log.warning)
    if name == "cli-reference":
        return cli_reference.reference()
    if name == "benchmark-table":
        return benchmark_plots.table(_benchmarks(config))
    if name == "benchmark-provenance":
        return benchmark_plots.provenance(_benchmarks(config))
    log.warning("unknown generated block %r", name)
    return ""


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    return _MARKER.sub(lambda m: _expand(m.group(1), config), markdown)
