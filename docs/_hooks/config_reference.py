"""The table of every ``BufferConfig`` field, made from the dataclass and its ``#:`` comments."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable

from docsource import class_field_comments

from firehose_buffer import BufferConfig, Quota
from firehose_buffer import config as config_module
from firehose_buffer.config import ENV_PREFIX

MIB = 1024 * 1024
#: Fields ``BufferConfig.from_env`` reads in a way of their own, or not at all.
_ENV_SPECIAL = {
    "streams": f"`{ENV_PREFIX}STREAMS=a,b`, or `{ENV_PREFIX}STREAM=base` with "
               f"`{ENV_PREFIX}SHARDS=N`",
    "quota": f"`{ENV_PREFIX}QUOTA=standard|high`, `{ENV_PREFIX}REQUESTS_PER_SECOND`, "
             f"`..._BYTES_PER_SECOND`, `..._RECORDS_PER_SECOND`",
    "router": "(code only)",
    "on_failure": "(code only)",
    # The environment already has variables for proxies; from_env refuses a FIREHOSE_BUFFER_ one.
    "proxies": "(code only; `None` reads `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`)",
}


def _default(field: dataclasses.Field[object]) -> str:
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        return "required"
    value = field.default
    if isinstance(value, Quota):
        for name in ("STANDARD", "HIGH"):
            if value == getattr(Quota, name):
                return f"`Quota.{name}`"
        return f"`{value!r}`"
    if isinstance(value, bool) or value is None:
        return f"`{value}`"
    if isinstance(value, int):
        text = f"`{value:,}`"
        if "bytes" in field.name and value >= MIB and value % MIB == 0:
            text += f" ({value // MIB} MiB)"
        return text
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def _type(annotation: str) -> str:
    """The annotation as written, with a ``Literal`` alias spelt out (``OnFull``)."""
    alias = getattr(config_module, annotation, None)
    if typing.get_origin(alias) is typing.Literal:
        return " | ".join(f'"{v}"' for v in typing.get_args(alias))
    return annotation


def _cell(text: str) -> str:
    # Pipes inside code spans do not split a cell (Python-Markdown's tables skip code spans).
    return text.replace("\n", " ")


def table(warn: Callable[[str], None]) -> str:
    """Markdown for every settable field; ``warn`` is told about a field with no comment."""
    path = inspect.getsourcefile(BufferConfig)
    assert path is not None
    comments = class_field_comments(path, "BufferConfig")
    rows = ["| field | type | default | environment | meaning |", "|---|---|---|---|---|"]
    derived = []
    for field in dataclasses.fields(BufferConfig):
        if not field.init:
            derived.append(field.name)
            continue
        meaning = comments.get(field.name)
        if meaning is None:
            warn(f"BufferConfig.{field.name} has no '#:' comment above it: the configuration "
                 "reference would have no meaning for it")
            meaning = ""
        env = _ENV_SPECIAL.get(field.name, f"`{ENV_PREFIX}{field.name.upper()}`")
        rows.append(f"| `{field.name}` | `{_cell(_type(str(field.type)))}` | {_default(field)} "
                    f"| {_cell(env)} | {_cell(meaning)} |")
    if derived:
        rows.append("")
        rows.append("Derived from the fields above, read-only: "
                    + ", ".join(f"`{name}`" for name in derived) + ".")
    return "\n".join(rows)
