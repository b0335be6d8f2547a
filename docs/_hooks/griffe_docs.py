"""A griffe extension: reST roles in docstrings become Markdown code spans, and attributes
documented by a ``#:`` comment get that comment as their docstring."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import griffe

sys.path.insert(0, str(Path(__file__).parent))
from docsource import comment_above, markdown


class RestToMarkdown(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg, set())

    # The same event under its griffe 1.x name; rewriting twice changes nothing.
    on_package_loaded = on_package

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
        elif obj.is_attribute and obj.lineno is not None and obj.filepath is not None:
            comment = comment_above(str(obj.filepath), obj.lineno)
            if comment:
                obj.docstring = griffe.Docstring(comment, parent=obj, lineno=obj.lineno)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)  # type: ignore[arg-type]
