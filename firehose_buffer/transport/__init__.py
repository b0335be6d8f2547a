"""How a batch reaches Firehose: ``send(stream, records) -> Outcome``, never raising.

Two implementations behind one contract: :class:`LeanTransport` for the client the buffer
makes itself (botocore's credentials, endpoint rules and signer; its own small HTTP pool and
a deadline on every whole call), and :class:`BotocoreTransport` around a boto3 client the
user passes. :mod:`.outcome` decides what any response means, for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from .._service.firehose import FIREHOSE, RETRYABLE_CODES, THROTTLE_CODES
from .botocore import BotocoreTransport, FirehoseClient
from .outcome import Outcome

if TYPE_CHECKING:
    from ..config import BufferConfig

classify_response = FIREHOSE.classify_response
classify_error = FIREHOSE.classify_error


class Transport(Protocol):
    """Sends one PutRecordBatch. Used from several threads at once."""

    def send(self, stream: str, records: Sequence[bytes | memoryview]) -> Outcome:
        """Send ``records`` to ``stream``; never raises, and ends within
        ``config.call_timeout_seconds`` where the implementation can bound it.

        ``records`` may be memoryviews over memory reused once this returns: an
        implementation keeps no reference to them (or to slices of them) afterwards.
        """
        ...

    def after_fork(self) -> None:
        """In a forked child: never touch the parent's pooled connections again."""
        ...

    def close(self) -> None:
        """Release pooled connections; ``send`` may still be called afterwards."""
        ...


def make_transport(
    config: BufferConfig,
    client: FirehoseClient | None = None,
    client_factory: Callable[[], FirehoseClient] | None = None,
) -> Transport:
    """The lean transport when neither ``client`` nor ``client_factory`` is given, else the
    botocore one around it. Raises ConfigurationError when no region or endpoint can be found."""
    if client is None and client_factory is None:
        from .lean import LeanTransport  # noqa: PLC0415

        return LeanTransport(config)
    return BotocoreTransport(client, client_factory)


__all__ = ["RETRYABLE_CODES", "THROTTLE_CODES", "BotocoreTransport", "FirehoseClient", "Outcome",
           "Transport", "classify_error", "classify_response", "make_transport"]
