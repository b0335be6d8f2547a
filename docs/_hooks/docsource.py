"""Docstrings and ``#:`` comments as Markdown, for the hooks and the griffe extension.

The package documents attributes with Sphinx-style ``#:`` comments above them and writes
reST roles (``:class:`~firehose_buffer.Quota```) in docstrings; MkDocs renders Markdown, so
roles become code spans and a paragraph ending in ``::`` ends in ``:``.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")
_LITERAL_MARK = re.compile(r"(?m)(\S)::$")
_BARE_LITERAL_MARK = re.compile(r"(?m)^(\s*)::$")


def _role(match: re.Match[str]) -> str:
    short, target = match.groups()
    target = target.strip()
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def markdown(text: str) -> str:
    """reST-flavoured docstring text as Markdown."""
    text = _ROLE.sub(_role, text)
    text = _LITERAL_MARK.sub(r"\1:", text)
    return _BARE_LITERAL_MARK.sub("", text)


@functools.cache
def _source_lines(path: str) -> tuple[str, ...]:
    return tuple(Path(path).read_text(encoding="utf-8").splitlines())


def comment_above(path: str, lineno: int) -> str | None:
    """The ``#:`` comment block right above line ``lineno`` (1-based) of ``path``, joined."""
    lines = _source_lines(path)
    parts: list[str] = []
    index = lineno - 2
    while index >= 0:
        stripped = lines[index].strip()
        if stripped == "#:" or stripped.startswith("#: "):
            parts.append(stripped[3:])
            index -= 1
            continue
        break
    if not parts:
        return None
    return markdown(" ".join(reversed(parts)).strip())


def class_field_comments(path: str, class_name: str) -> dict[str, str]:
    """``{field: comment}`` for the annotated fields of ``class_name`` defined in ``path``."""
    tree = ast.parse("\n".join(_source_lines(path)))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            found: dict[str, str] = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    comment = comment_above(path, item.lineno)
                    if comment:
                        found[item.target.id] = comment
            return found
    raise LookupError(f"class {class_name} not found in {path}")
