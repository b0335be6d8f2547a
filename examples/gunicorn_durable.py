"""gunicorn settings for durable mode: ``gunicorn -c gunicorn_durable.py -k sync flask_app:app``.

Each worker's buffer keeps what put() accepted in files under one spool directory that every
worker shares (and the next run too). A worker that dies without closing its buffer (killed
for missing ``--timeout``, by the OOM killer, by a segfault in a C extension) leaves its
events there; a sibling worker sends them within seconds (a durable buffer looks for the
files of dead processes every 2 s), or the worker started in its place does, on first use.

Everything else is ``gunicorn_conf.py``'s. The spool directory must be on a local file system
the workers can write to: a disk (survives a reboot too) or tmpfs such as ``/dev/shm``
(survives the death of a process, not a reboot). In Kubernetes, a volume that outlives the
container (an ``emptyDir`` survives a container restart, not the pod's move to another node).
"""

from __future__ import annotations

import os

from gunicorn_conf import bind, graceful_timeout, preload_app, workers

__all__ = ["bind", "graceful_timeout", "preload_app", "timeout", "workers"]

# The buffer reads its configuration from the environment (BufferConfig.from_env); these are
# defaults, the environment wins. Set here, they reach the app whether it is imported in the
# master (--preload) or in each worker.
os.environ.setdefault("FIREHOSE_BUFFER_DURABLE", "true")
os.environ.setdefault("FIREHOSE_BUFFER_SPOOL_DIR", os.path.abspath("spool"))

# A worker silent this long is killed: SIGABRT, then SIGKILL a second or so later if it is
# stuck where no signal handler can run. Its events wait in the spool directory for the next.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
