"""A Flask service that ships one event per request to Firehose, for gunicorn's sync or
gthread workers.

The buffer is made at import: with ``--preload`` in the master, which forks the workers,
and each worker ships its own events. Closing needs nothing more: on SIGTERM a sync or
gthread worker finishes its requests and leaves through a normal interpreter exit, where the
buffer's exit hook closes it within ``exit_timeout_seconds``. ``close_buffer`` below does
the same one step earlier, only to log the final numbers.

Run from this directory (see README.md)::

    FIREHOSE_BUFFER_STREAMS=events-0,events-1 \\
        gunicorn -c gunicorn_conf.py -k gthread --threads 8 flask_app:app
"""

from __future__ import annotations

import atexit
from typing import Any

from flask import Flask, request
from shutdown_report import report_final_stats

from firehose_buffer import (
    BufferConfig,
    BufferFullError,
    EventTypeError,
    EventValueError,
    FirehoseBuffer,
)

buffer = FirehoseBuffer(BufferConfig.from_env())
app = Flask(__name__)


def close_buffer() -> None:
    """Deliver what this process still holds (within exit_timeout_seconds); idempotent."""
    report_final_stats(buffer, buffer.close(buffer.config.exit_timeout_seconds))


# Registered after the buffer, so it runs before the buffer's own exit hook (atexit is LIFO).
atexit.register(close_buffer)


@app.post("/events")
def track() -> tuple[dict[str, Any], int]:
    event = request.get_json(silent=True)
    if not isinstance(event, dict):
        return {"error": "send one JSON object"}, 400
    try:
        buffer.put(event)
    except BufferFullError:
        return {"error": "event buffer full"}, 503
    except (EventTypeError, EventValueError) as exc:
        return {"error": str(exc)}, 422
    return {"accepted": True}, 202


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}
