"""The threads and the process: the engine that wires the stages under one lock, the worker,
the senders, the failure sink, the spool replay, fork and exit, telemetry and logging."""
