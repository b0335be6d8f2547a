"""Per-invocation flush for AWS Lambda handlers: :func:`flush_after`.

Lambda freezes the execution environment as soon as a handler returns: the buffer's threads
stop wherever they were (mid-linger, mid-request) until the next invocation, and an
environment that is never invoked again is destroyed without a signal, so no exit hook
runs. The only moment a Lambda function can be sure its events leave is before its handler
returns; that costs the invocation one flush (a few milliseconds for a few events).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from .buffer import FirehoseBuffer
from .errors import ConfigurationError
from .stats import FlushResult

log = logging.getLogger("firehose_buffer.aws_lambda")

P = ParamSpec("P")
R = TypeVar("R")

#: How long the flush may take when the handler gets no Lambda context to ask (a local run,
#: a test calling the handler directly): the default of ``flush()``.
DEFAULT_TIMEOUT_SECONDS = 10.0


def flush_after(
    buffer: FirehoseBuffer,
    *,
    margin_seconds: float = 0.5,
    default_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a Lambda handler ``handler(event, context)`` so that everything it put is
    flushed before it returns (or raises: the flush runs, then the exception goes on).

    The flush gets the time the invocation has left, from the context's
    ``get_remaining_time_in_millis()``, minus ``margin_seconds`` for the handler's own
    return; without a context that has it, ``default_timeout_seconds``. What it could not
    deliver in time is logged as one WARNING with the counts: failed events went to the
    spool or ``on_failure`` as usual, pending ones stay buffered and leave with the next
    invocation (a freeze between invocations does not expire them). If the environment is
    never invoked again those pending events are lost, so keep the margin and the
    function's timeout generous enough for one flush.

    Example::

        buffer = FirehoseBuffer(BufferConfig.from_env())

        @flush_after(buffer)
        def handler(event, context):
            buffer.put({"event_type": "order", "id": event["id"]})
            return {"statusCode": 200}
    """
    if margin_seconds < 0:
        raise ConfigurationError("margin_seconds must not be negative")
    if default_timeout_seconds < 0:
        raise ConfigurationError("default_timeout_seconds must not be negative")

    def decorate(handler: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(handler)
        def invoke(*args: P.args, **kwargs: P.kwargs) -> R:
            context = args[1] if len(args) > 1 else kwargs.get("context")
            try:
                return handler(*args, **kwargs)
            finally:
                _flush(buffer, _time_left(context, margin_seconds, default_timeout_seconds))

        return invoke

    return decorate


def _time_left(context: object, margin: float, default: float) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return default
    try:
        millis = float(remaining())
    except Exception:
        log.warning("context.get_remaining_time_in_millis() failed; flushing for %.1f s",
                    default, exc_info=True)
        return default
    return max(0.0, millis / 1000.0 - margin)


def _flush(buffer: FirehoseBuffer, timeout: float) -> FlushResult | None:
    # Never let the flush hide the handler's own exception or answer.
    try:
        result = buffer.flush(timeout)
    except Exception:
        log.exception("flushing the buffer at the end of the invocation failed")
        return None
    if not result:
        log.warning(
            "invocation ends with %d events not delivered (the flush had %.2f s): "
            "%d delivered, %d failed (spooled or given to on_failure), %d pending (they go "
            "with the next invocation)", result.failed + result.pending, timeout,
            result.delivered, result.failed, result.pending,
        )
    return result


__all__ = ["DEFAULT_TIMEOUT_SECONDS", "flush_after"]
