"""Every class in the package says what it is (and who owns it or which thread uses it) in a
docstring: a reader of the tree should not have to reverse-engineer a class from its code."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "firehose_buffer"


def test_every_class_has_a_docstring() -> None:
    missing = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ClassDef) and not ast.get_docstring(node)
    ]
    assert missing == [], "classes without a docstring:\n" + "\n".join(missing)
