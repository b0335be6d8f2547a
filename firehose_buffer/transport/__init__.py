"""Temporary seam (replaced by the transport package)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ..client import make_client
from ..config import BufferConfig
from ..sender import RETRYABLE_CODES, THROTTLE_CODES, FirehoseClient, Outcome, put_record_batch


class Transport(Protocol):
    def send(self, stream: str, records: Sequence[bytes | memoryview]) -> Outcome: ...
    def after_fork(self) -> None: ...
    def close(self) -> None: ...


class _Botocore:
    def __init__(self, config: BufferConfig, client: FirehoseClient | None,
                 factory: Callable[[], FirehoseClient] | None) -> None:
        self._config = config
        self._factory = factory
        self._own = client is None and factory is None
        self._client = client if client is not None else (
            factory() if factory is not None else make_client(config))

    def send(self, stream: str, records: Sequence[bytes | memoryview]) -> Outcome:
        data = list(records) if self._own else [bytes(r) for r in records]
        return put_record_batch(self._client, stream, data)  # type: ignore[arg-type]

    def after_fork(self) -> None:
        if self._factory is not None:
            self._client = self._factory()
        elif self._own:
            self._client = make_client(self._config)

    def close(self) -> None:
        pass


def make_transport(config: BufferConfig, client: FirehoseClient | None = None,
                   client_factory: Callable[[], FirehoseClient] | None = None) -> Transport:
    return _Botocore(config, client, client_factory)


__all__ = ["RETRYABLE_CODES", "THROTTLE_CODES", "Outcome", "Transport", "make_transport"]
