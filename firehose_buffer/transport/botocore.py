"""The transport for a boto3/botocore client the user passes (``client=`` or ``client_factory=``).

botocore cannot bound a whole call: its timeouts apply to connecting and to each socket read,
so a server that trickles its answer keeps ``send`` waiting for as long as it trickles, and
``call_timeout_seconds`` is not enforced here. Whoever runs ``send`` must watch the clock
itself. The buffer's own client (:mod:`.lean`) does not have this gap.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol, cast

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProxyConnectionError,
    SSLError,
)
from botocore.parsers import ResponseParserError
from urllib3.util.ssl_match_hostname import CertificateError as Urllib3CertificateError

from .._service.firehose import FIREHOSE, MALFORMED
from .outcome import Outcome

log = logging.getLogger("firehose_buffer")


class FirehoseClient(Protocol):
    """The part of boto3's Firehose client this library uses."""

    def put_record_batch(self, **kwargs: Any) -> dict[str, Any]: ...


class BotocoreTransport:
    """``send`` through ``client.put_record_batch``; every exception becomes an Outcome.

    After a fork the child must not use the parent's pooled sockets (both processes would
    write into the same connections and garble each other's requests). With a factory the
    child calls it again; with a plain botocore client it builds a fresh one with the same
    region, endpoint, botocore Config and credentials object. Event hooks registered on the
    given client are not carried over: pass ``client_factory`` if you rely on them. A client
    that is not botocore's cannot be remade; the child keeps it, with a warning.
    """

    def __init__(
        self,
        client: FirehoseClient | None = None,
        client_factory: Callable[[], FirehoseClient] | None = None,
    ) -> None:
        if (client is None) == (client_factory is None):
            raise ValueError("give exactly one of client and client_factory")
        self._factory = client_factory
        self._client: FirehoseClient = client if client is not None else client_factory()  # type: ignore[misc]
        # The parent's clients, kept alive in a child so that nothing there ever closes
        # (or reads, or writes) the sockets the parent still uses.
        self._abandoned: list[FirehoseClient] = []
        #: The client retries calls itself (boto3's default): an answer may follow attempts
        #: that stored the records already; the buffer counts them as possible duplicates.
        self._retries = _attempts(self._client) > 1

    @property
    def client(self) -> FirehoseClient:
        return self._client

    def send(self, stream: str, records: Sequence[bytes | memoryview]) -> Outcome:
        """One PutRecordBatch; never raises. Not bounded in total (see the module's doc)."""
        try:
            # A plain client validates Data as bytes; a memoryview may also point into
            # memory that is reused once send returns, so nothing of it is kept.
            entries = [{"Data": r if type(r) is bytes else bytes(r)} for r in records]
            response = self._client.put_record_batch(DeliveryStreamName=stream, Records=entries)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            outcome = FIREHOSE.classify_error(str(error.get("Code") or "") or None,
                                              _int(meta.get("HTTPStatusCode")))
            return replace(outcome, resent=True) if _int(meta.get("RetryAttempts")) else outcome
        except SSLError as exc:
            if _cause(exc, _CERTIFICATE_ERRORS) is not None:
                # As the lean transport says it: refused before anything was sent.
                return Outcome(error="SSLCertVerificationError")
            return Outcome(error=type(exc).__name__, retryable=True, unknown=True)
        except ProxyConnectionError as exc:
            # urllib3 keeps only http.client's message of a refused CONNECT.
            refused = _TUNNEL_REFUSED.search(str(_cause(exc, OSError) or ""))
            if refused is not None and refused.group(1) == "407":
                return Outcome(error="ProxyAuthenticationRequired")
            return Outcome(error=type(exc).__name__, retryable=True)
        except (ConnectTimeoutError, EndpointConnectionError) as exc:
            # This attempt reached nothing; an earlier one of botocore's own may have.
            return Outcome(error=type(exc).__name__, retryable=True, resent=self._retries)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            return Outcome(error=type(exc).__name__)
        except ResponseParserError:
            return MALFORMED
        except BotoCoreError as exc:
            # Connection reset, read timeout, bad response...: the records may have landed.
            return Outcome(error=type(exc).__name__, retryable=True, unknown=True)
        except Exception as exc:  # a bug or an exotic client: keep the events, retry, say so
            if _raised_in_parser(exc):
                # botocore's parser trips over shapes it does not expect (a string where an
                # entry should be) with plain AttributeErrors: the answer was malformed.
                return MALFORMED
            log.exception("PutRecordBatch to %s raised unexpectedly", stream)
            return Outcome(error=type(exc).__name__, retryable=True, unknown=True)
        outcome = FIREHOSE.classify_response(response, len(records))
        attempts = _int(response.get("ResponseMetadata", {}).get("RetryAttempts")) if \
            isinstance(response, dict) else 0
        return replace(outcome, resent=True) if attempts else outcome

    def after_fork(self) -> None:
        """In a forked child: a client of its own, never the parent's connections."""
        old = self._client
        try:
            fresh = self._factory() if self._factory is not None else _remake(old)
        except Exception:
            log.exception("could not make a Firehose client in the forked child; keeping the "
                          "parent's, whose connections both processes now share")
            return
        if fresh is None:
            log.warning("FirehoseBuffer in a forked child keeps the client it was given, "
                        "whose connections the parent shares; pass client_factory instead")
            return
        self._abandoned.append(old)
        self._client = fresh

    def close(self) -> None:
        """Nothing to release: the client is the user's (or the factory's) to close."""


# urllib3 checks the host name of a certificate for an IP address itself, with its own error.
_CERTIFICATE_ERRORS = (ssl.SSLCertVerificationError, Urllib3CertificateError)
_TUNNEL_REFUSED = re.compile(r"Tunnel connection failed: (\d{3})")


def _cause(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...],
           ) -> BaseException | None:
    """The first ``kind`` among what ``exc`` wraps (botocore's ``error=``, urllib3's args,
    Python's cause and context), or None."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current is not exc and isinstance(current, kind):
            return current
        kwargs = getattr(current, "kwargs", None)
        wrapped = [kwargs.get("error") if isinstance(kwargs, dict) else None,
                   current.__cause__, current.__context__, *current.args]
        todo.extend(e for e in wrapped if isinstance(e, BaseException))
    return None


def _attempts(client: Any) -> int:
    """Attempts a botocore client makes per call (1 when it is not botocore's)."""
    config = getattr(getattr(client, "meta", None), "config", None)
    retries = getattr(config, "retries", None)
    if not isinstance(retries, dict):
        return 1
    if "total_max_attempts" in retries:
        return _int(retries["total_max_attempts"]) or 1
    if "max_attempts" in retries:
        return _int(retries["max_attempts"]) + 1
    return 3 if retries.get("mode") == "standard" else 5  # botocore's defaults


def _raised_in_parser(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__") == "botocore.parsers":
            return True
        tb = tb.tb_next
    return False


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return 0


def _remake(client: Any) -> FirehoseClient | None:
    """A fresh botocore Firehose client configured as ``client`` is, or None if it is not one."""
    meta = getattr(client, "meta", None)
    if meta is None or getattr(getattr(meta, "service_model", None), "service_name", None) \
            != "firehose":
        return None
    import botocore.session  # noqa: PLC0415  (only a forked child with a plain client pays)
    from botocore.credentials import CredentialProvider, CredentialResolver  # noqa: PLC0415

    session = botocore.session.Session()
    signer = getattr(client, "_request_signer", None)
    credentials = getattr(signer, "_credentials", None)
    if credentials is not None:
        # The same credentials object (refreshable ones keep refreshing), through the
        # session's public hook for where credentials come from.
        class _Inherited(CredentialProvider):
            """The user's client's credentials, for the client remade in a forked child."""

            METHOD = "firehose-buffer-inherited"

            def load(self) -> Any:
                return credentials

        session.register_component("credential_provider", CredentialResolver([_Inherited()]))
    fresh: Any = session.create_client(
        "firehose", region_name=meta.region_name, endpoint_url=meta.endpoint_url,
        config=meta.config,
    )
    return cast(FirehoseClient, fresh)
