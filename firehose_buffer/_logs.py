"""Warnings that can repeat thousands of times a second, said at most once per interval."""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    """Logs a message at most once per ``interval`` seconds, with how many were suppressed.

    No lock: a log call may come from a put() re-entering on a thread that is already in
    here (a logging handler that puts into a buffer). Two threads racing may both log, or
    miscount the suppressed by one; neither matters for a rate limit.
    """

    __slots__ = ("_interval", "_logger", "_next", "_suppressed")

    def __init__(self, logger: logging.Logger, interval: float) -> None:
        self._logger = logger
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def warning(self, message: str, *args: Any) -> None:
        self._log(logging.WARNING, message, args)

    def error(self, message: str, *args: Any) -> None:
        self._log(logging.ERROR, message, args)

    def _log(self, level: int, message: str, args: tuple[Any, ...]) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self._interval
        suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, message, *args)
