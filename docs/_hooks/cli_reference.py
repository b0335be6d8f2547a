"""The CLI reference, made from the parsers ``firehose_buffer.cli.build_parser()`` returns."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

from firehose_buffer.cli import build_parser

WIDTH = "96"


@contextmanager
def _fixed_width() -> Iterator[None]:
    # argparse wraps to the terminal's width, read from COLUMNS: the same text on every machine.
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[
        argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError("the firehose-buffer parser has no subcommands")


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    # What argparse prints: %(default)s and friends filled in (HelpFormatter._expand_help).
    formatter = parser._get_formatter()
    return formatter._expand_help(action)


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        metavar = action.metavar or action.dest
        return f"`{metavar}`" + (" ..." if action.nargs in ("*", "+") else "")
    parts = []
    for flag in action.option_strings:
        if action.nargs == 0:
            parts.append(f"`{flag}`")
        else:
            metavar = action.metavar or (
                "{" + ",".join(map(str, action.choices)) + "}" if action.choices
                else action.dest.upper())
            parts.append(f"`{flag} {metavar}`")
    return ", ".join(parts)


def _cell(text: str) -> str:
    # A pipe splits a table cell except inside a code span.
    parts = " ".join(text.split()).split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def _options(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)
                   and a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = group.title or "options"
        out.append(f"**{title}**" + (f": {_cell(group.description)}" if group.description
                                     else ""))
        out.append("")
        out.append("| option | meaning |")
        out.append("|---|---|")
        for action in actions:
            out.append(f"| {_flags(action)} | {_cell(_help(parser, action))} |")
        out.append("")
    return out


def _text_block(text: str) -> list[str]:
    return ["```text", text.strip("\n"), "```", ""]


def reference() -> str:
    """Markdown: the top-level usage, then one section per subcommand."""
    with _fixed_width():
        parser = build_parser()
        sub = _subcommands(parser)
        out = _text_block(parser.format_usage())
        out.append("| command | what it does |")
        out.append("|---|---|")
        helps = {choice.dest: choice.help for choice in sub._choices_actions}
        for name in sub.choices:
            out.append(f"| [`{name}`](#{name}) | {_cell(helps.get(name) or '')} |")
        out.append("")
        for name, child in sub.choices.items():
            out.append(f"## {name} {{#{name}}}")
            out.append("")
            out.extend(_text_block(child.format_usage()))
            if child.description:
                out.extend(_text_block(child.description))
            out.extend(_options(child))
            if child.epilog:
                out.extend(_text_block(child.epilog))
    return "\n".join(out)
