"""Runs a Lambda handler the way the Lambda runtime does, one invocation per stdin line.

``python lambda_driver.py module:function``: imports the handler once (the cold start),
prints ``ready``, then for each JSON line ``{"event": ..., "timeout": seconds}`` calls
``handler(event, context)`` and prints one JSON line with its answer and the buffer's
``stats()``. The test freezes this process between invocations (SIGSTOP/SIGCONT), as Lambda
freezes an execution environment, and kills it after the last one.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import time
from typing import Any

import orjson


class Context:
    """The part of Lambda's context object handlers use: the invocation's deadline."""

    def __init__(self, timeout: float) -> None:
        self._deadline = time.monotonic() + timeout
        self.function_name = "local"
        self.aws_request_id = f"{time.time_ns():x}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    module_name, _, function = sys.argv[1].partition(":")
    module = importlib.import_module(module_name)
    handler = getattr(module, function)
    print("ready", flush=True)
    for line in sys.stdin:
        request: dict[str, Any] = orjson.loads(line)
        answer = handler(request["event"], Context(float(request["timeout"])))
        stats = dataclasses.asdict(module.buffer.stats())
        sys.stdout.write(orjson.dumps({"answer": answer, "stats": stats}).decode() + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
