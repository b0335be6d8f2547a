"""gunicorn settings for the examples: ``gunicorn -c gunicorn_conf.py -k KIND module:app``.

No server hook is needed for the buffer, and none is set, because of what each kind of
worker does with the SIGTERM the master passes on when it is told to stop:

- ``sync`` and ``gthread`` workers finish their requests and leave through ``sys.exit(0)``,
  a normal interpreter exit: the buffer's exit hook (and flask_app.py's own) closes it.
- ``uvicorn.workers.UvicornWorker`` resets SIGTERM to the default handler, and uvicorn,
  after its graceful shutdown, restores that handler and raises SIGTERM again: the worker
  dies by the signal, so neither ``atexit`` nor gunicorn's ``worker_exit`` hook runs, and
  ``install_sigterm_handler()`` at import only reaches the master. The ASGI lifespan's
  shutdown runs before that: fastapi_app.py closes the buffer there.
"""

from __future__ import annotations

import os

# Build the app (and its buffer) once in the master; each forked worker gets its own empty
# buffer and ships its own events.
preload_app = True
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
bind = os.environ.get("BIND", "127.0.0.1:8000")
# gunicorn SIGKILLs a worker still alive graceful_timeout seconds after SIGTERM: leave room
# for the requests in flight plus the buffer's close (exit_timeout_seconds).
graceful_timeout = int(float(os.environ.get("FIREHOSE_BUFFER_EXIT_TIMEOUT_SECONDS", "5"))) + 10
