"""Acting at the exact points where CPython can run a signal handler, for child processes that
test what an exception (Ctrl-C, a SIGTERM turned into SystemExit, a handler that raises) or a
re-entrant call does when it lands inside ``put()``.

A Python-level signal handler does not run where the signal arrives: the interpreter notes it
and runs the handler at its next check of the "eval breaker", between two bytecode
instructions. CPython 3.11 checks at a function's entry (``RESUME``), at the end of every call
instruction (``CALL``, ``CALL_FUNCTION_EX``: after a C function returns) and on a backward
jump (``JUMP_BACKWARD``); later versions check at least there. :class:`SignalPoints` traces a
call opcode by opcode and runs an action at its k-th such point, in any frame the call runs
(the library's, the standard library's, the dataclass-generated ``__init__`` methods), as a
handler would run there. An action that raises makes the exception surface exactly as a
handler's would; an action that calls back into the library is a re-entrant call from a
handler.

Sweeping k from 1 until the call has fewer points visits every point of every path the call
takes, deterministically, with no knowledge of the library's internals. A call of a
pure-Python function is not followed by a check (CPython runs the callee in the same loop and
checks at its points); one that went through C (a builtin, a class whose ``__init__`` is
Python) is. A call that raised is not followed by a check either: the interpreter goes
straight to the exception handler.
"""

from __future__ import annotations

import dis
import sys
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

_CALLS = frozenset({"CALL", "CALL_FUNCTION_EX"})
_CHECKED_AFTER = _CALLS | {"RESUME", "JUMP_BACKWARD"}


class SignalPoints:
    """``points.run(k, action, fn, *args)``: call ``fn(*args)``, running ``action()`` at its
    k-th signal check point; ``hit`` says whether it got there, ``seen`` how many points the
    call passed, ``where`` (file, function, line) of the point acted at.

    ``only``: count only points in modules whose name starts with it (``"firehose_buffer"``:
    the library's own code, wherever its modules move).
    """

    def __init__(self, only: str | None = None) -> None:
        self._only = only
        #: Per code object: each instruction's name and the offset of the one after it.
        self._ops: dict[CodeType, dict[int, tuple[str, int | None]]] = {}
        #: Per frame: the last instruction traced, and the offset of the one after it.
        self._last: dict[FrameType, tuple[str | None, int | None]] = {}
        #: Per frame, since its last call instruction started: None (no Python frame
        #: entered: the callee was C), True (C was on the way), False (a Python function).
        self._via_c: dict[FrameType, bool | None] = {}
        self._countdown = 0
        self._action: Callable[[], None] = _nothing
        self.hit = False
        self.seen = 0
        self.where: tuple[str, str, int] | None = None
        # Bound once: returning ``self._on_opcode`` would allocate a method object at every
        # event, and an action that arms the garbage collector wants the next allocation to
        # be the traced code's.
        self._tracer = self._on_opcode

    def run(self, k: int, action: Callable[[], None], fn: Callable[..., Any], *args: Any) -> Any:
        self._countdown, self._action = k, action
        self.hit, self.seen, self.where = False, 0, None
        self._last.clear()
        self._via_c.clear()
        sys.setprofile(self._on_profile)
        sys.settrace(self._on_call)
        try:
            return fn(*args)
        finally:
            sys.settrace(None)
            sys.setprofile(None)
            self._last.clear()
            self._via_c.clear()

    def _on_profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and frame in self._via_c:
            self._via_c[frame] = True

    def _on_call(self, frame: FrameType, event: str, arg: Any) -> Any:
        caller = frame.f_back
        if caller is not None and caller in self._via_c and self._via_c[caller] is None:
            # A class called from Python code runs its __init__ from C; a function call is
            # direct.
            self._via_c[caller] = frame.f_code.co_name in ("__init__", "__new__")
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self._tracer

    def _on_opcode(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event != "opcode":
            return self._tracer
        code = frame.f_code
        ops = self._ops.get(code)
        if ops is None:
            ops = self._ops[code] = _instructions(code)
        # A frame's first traced instruction follows its RESUME.
        previous, follows = self._last.get(frame, ("RESUME", None))
        current, _ = self._last[frame] = ops.get(frame.f_lasti, (None, None))
        checked = previous in _CHECKED_AFTER
        if previous in _CALLS:
            # Not after a call that raised (the next instruction is then a handler's).
            checked = (self._via_c.pop(frame, None) is not False
                       and frame.f_lasti == follows)
        if current in _CALLS:
            self._via_c[frame] = None
        if checked and (
            self._only is None or frame.f_globals.get("__name__", "").startswith(self._only)
        ):
            self.seen += 1
            if self.seen == self._countdown:
                self.hit = True
                self.where = (code.co_filename.rsplit("/", 1)[-1], code.co_name, frame.f_lineno)
                # Tracing is suspended while this runs, so a re-entrant call runs untraced;
                # an exception from it unsets the trace function and surfaces in ``frame``.
                self._action()
        return self._tracer


def _instructions(code: CodeType) -> dict[int, tuple[str, int | None]]:
    listed = list(dis.get_instructions(code))
    return {i.offset: (i.opname, listed[n + 1].offset if n + 1 < len(listed) else None)
            for n, i in enumerate(listed)}


def _nothing() -> None:
    pass


class StallingClient:
    """A boto3 Firehose client (real HTTP to ``endpoint``) whose calls wait while ``stall()``
    is in effect, as if the endpoint had stopped answering; ``resume()`` lets them go."""

    def __init__(self, endpoint: str) -> None:
        import boto3  # noqa: PLC0415  (only the children that stall pay for it)
        from botocore.config import Config  # noqa: PLC0415

        self.client = boto3.client(
            "firehose", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )
        self._open = threading.Event()
        self._open.set()

    def stall(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def put_record_batch(self, **kwargs: Any) -> Any:
        if not self._open.wait(60):
            raise TimeoutError("the test never resumed the client")
        return self.client.put_record_batch(**kwargs)
