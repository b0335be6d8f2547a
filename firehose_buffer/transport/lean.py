"""The transport for the client the buffer makes itself: botocore's signer, a small HTTP pool.

botocore turns a 4 MiB batch into a signed request at about twice the CPU of the floor
(base64 of the records plus SHA-256 of the body), and its timeouts bound each socket read,
never a whole call. This transport keeps what must be exactly botocore's (the credential
chain, region and endpoint resolution, SigV4 through ``botocore.auth.SigV4Auth``), builds the
body from bytes, sends it over ``http.client`` connections it pools itself, and bounds every
call by ``call_timeout_seconds`` with a watchdog that shuts the socket down at the deadline.

Why not urllib3's pool: the deadline needs the socket from the moment the call starts
(connect, CONNECT through a proxy, TLS handshake, sending, waiting for headers), and a
connection cut off must never go back to the pool; urllib3 exposes neither without private
methods. TLS trusts what botocore trusts (``AWS_CA_BUNDLE``, ``ca_bundle`` in the AWS config
file, else botocore's bundle); proxies are chosen as botocore chooses them (see
:mod:`._connect`).

A certificate the endpoint presents that the client cannot verify, and a proxy that refuses
its credentials (407), fail the call at once, not retryable: nothing was sent, and what would
change the answer (the CA bundle, the endpoint, the proxy URL) is read once, when the
transport is made. The buffer then fails the records with that reason (to the spool, where a
restart with the fix delivers them, or to ``on_failure``), rather than resending into the
same refusal until ``record_ttl_seconds``. A proxy that cannot be reached, or answers CONNECT
with a 5xx, is retryable like an endpoint that cannot be reached.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from .._logs import RateLimitedLog
from .._service.firehose import FIREHOSE, MALFORMED
from ..config import BufferConfig
from ..errors import ConfigurationError
from ._body import body_buffer
from ._connect import Connection, ProxyError, ProxyRefused, choose_proxy, host_header
from ._deadline import WATCHDOG
from .outcome import Outcome

log = logging.getLogger("firehose_buffer")

#: A pooled connection idle this long is closed rather than reused: servers and load balancers
#: close idle connections after a while (60 s and up is usual), and one closed just as a
#: request goes out resets it, an outcome the client cannot tell from a lost answer (a
#: possible duplicate). Reconnecting costs one handshake per stream after a quiet spell.
_MAX_IDLE_SECONDS = 20.0
#: A PutRecordBatch answer is at most ~100 bytes per record; anything far larger is hostile.
_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
USER_AGENT = "firehose-buffer"


class LeanTransport:
    """PutRecordBatch over a pool of ``config.concurrency`` keep-alive connections.

    Built from the config the way boto3 would build a client: region from ``config.region``
    or the AWS configuration; endpoint from ``config.endpoint_url``, else
    ``AWS_ENDPOINT_URL_FIREHOSE`` / ``AWS_ENDPOINT_URL`` / the config files, else the
    regional endpoint (botocore is asked once, at construction); credentials from botocore's
    chain, refreshable ones frozen per request; the CA bundle and the proxy as botocore
    would pick them, at construction.
    """

    def __init__(self, config: BufferConfig, session: Any = None) -> None:
        import botocore.session  # noqa: PLC0415
        from botocore.exceptions import BotoCoreError  # noqa: PLC0415
        from botocore.httpsession import get_cert_path  # noqa: PLC0415

        self._config = config
        session = session if session is not None else botocore.session.Session()
        try:
            if config.endpoint_url is not None:
                endpoint = config.endpoint_url
                region = config.region or session.get_config_variable("region")
                if not region:
                    raise ConfigurationError(
                        "no AWS region: set region in the config, or AWS_REGION")
            else:
                region = config.region or session.get_config_variable("region")
                plain = plain_regional_endpoint(session, region)
                if plain is not None:
                    endpoint = plain
                else:
                    # Only botocore knows every rule (environment, config files, FIPS, dual
                    # stack, partitions); the client is asked and dropped, it never connects.
                    probe = session.create_client(FIREHOSE.signing_name,
                                                  region_name=config.region)
                    endpoint, region = probe.meta.endpoint_url, probe.meta.region_name
            self._credentials = session.get_credentials()
        except (BotoCoreError, ValueError) as exc:  # ValueError: botocore on a malformed region
            raise ConfigurationError(
                f"cannot set up Firehose requests: {exc} (set region/endpoint_url in the "
                "config, or AWS_REGION / AWS_ENDPOINT_URL_FIREHOSE in the environment)"
            ) from exc
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"endpoint_url must be http(s)://host[:port], not {endpoint!r}")
        self.endpoint_url = endpoint
        self.region: str = region
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path or "/"
        self._url = f"{parts.scheme}://{parts.netloc}{self._path}"
        self._ssl: ssl.SSLContext | None = None
        self._ca_bundle: str | None = None
        if self._https:
            ca = session.get_config_variable("ca_bundle") or get_cert_path(True)
            try:
                self._ssl = ssl.create_default_context(cafile=ca)
            except (OSError, ValueError) as exc:
                raise ConfigurationError(
                    f"cannot read the CA bundle {ca!r} (AWS_CA_BUNDLE, or ca_bundle in the AWS "
                    f"config file): {exc}") from exc
            self._ca_bundle = str(ca)
        self._proxy = choose_proxy(endpoint, config.proxies)
        # Through a proxy, plain HTTP goes to the proxy with the absolute URL as the target.
        forwarded = self._proxy is not None and not self._https
        self._target = self._url if forwarded else self._path
        self._extra_headers = dict(self._proxy.headers) if forwarded and self._proxy else {}
        self._host_header = host_header(endpoint)
        self._errors = RateLimitedLog(log, interval=10.0)
        # Refusals that only a change of setup can end, said apart from the network's noise.
        self._refusals = RateLimitedLog(log, interval=10.0)
        self._init_pool()

    def _init_pool(self) -> None:
        self._pool_lock = threading.Lock()
        self._idle: list[Connection] = []
        self._pid = os.getpid()

    # -- the contract -----------------------------------------------------------------------

    def send(self, stream: str, records: Sequence[bytes | memoryview]) -> Outcome:
        """One PutRecordBatch, ended by ``call_timeout_seconds`` at the latest; never raises."""
        try:
            return self._send(stream, records)
        except Exception as exc:  # a bug here must not kill the sender: retry, say so once
            self._errors.error("PutRecordBatch to %s failed unexpectedly: %r", stream, exc)
            return Outcome(error=type(exc).__name__, retryable=True, unknown=True)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections without touching them."""
        self._abandoned = self._idle  # kept alive: not even their file descriptors are closed
        self._init_pool()

    def close(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- one call ---------------------------------------------------------------------------

    def _send(self, stream: str, records: Sequence[bytes | memoryview]) -> Outcome:
        config = self._config
        deadline = time.monotonic() + config.call_timeout_seconds
        if self._credentials is None:
            return Outcome(error="NoCredentialsError")
        try:
            frozen = self._credentials.get_frozen_credentials()
        except Exception as exc:  # refresh failed (botocore's errors or the network's)
            return Outcome(error=type(exc).__name__, retryable=True)
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            return Outcome(error="NoCredentialsError")
        body = body_buffer().build(stream, records)
        try:
            headers = self._sign(frozen, body)
            return self._call(body, headers, deadline, len(records))
        finally:
            body.release()  # the buffer is reused by this thread's next call

    def _call(self, body: memoryview, headers: dict[str, str], deadline: float,
              count: int) -> Outcome:
        config = self._config
        conn = self._checkout()
        armed = WATCHDOG.arm(deadline, conn)
        conn.armed = armed
        sent = False
        try:
            if conn.sock is None:
                conn.timeout = max(0.001, min(config.connect_timeout_seconds,
                                              deadline - time.monotonic()))
                conn.connect()
                assert conn.sock is not None
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if armed.fired:
                raise TimeoutError("deadline reached while connecting")
            conn.sock.settimeout(config.read_timeout_seconds)
            sent = True
            conn.request("POST", self._target, body, headers)
            response = conn.getresponse()
            payload = response.read(_MAX_RESPONSE_BYTES + 1)
            # read(amt) returns what came before an EOF without complaint: a body shorter
            # than its Content-Length is a connection cut, not an answer.
            if response.length:
                raise http.client.IncompleteRead(payload, response.length)
            reusable = not response.will_close and response.isclosed()
        except Exception as exc:
            cut_off = not WATCHDOG.disarm(armed)
            conn.close()
            outcome = _failure(exc, cut_off, sent)
            if not cut_off:
                self._explain(exc, outcome)
            return outcome
        cut_off = not WATCHDOG.disarm(armed)
        if cut_off or not reusable or len(payload) > _MAX_RESPONSE_BYTES:
            conn.close()  # cut off, or the server is done with it: never back to the pool
            if cut_off and response.length is None and not response.chunked:
                # A body that ends when the connection does: the cut may have ended it.
                return Outcome(error="CallTimeout", retryable=True, unknown=True)
        else:
            self._checkin(conn)
        return _classify(response.status, response.getheader("x-amzn-ErrorType"), payload,
                         count)

    def _sign(self, frozen: Any, body: memoryview) -> dict[str, str]:
        # The body stays out of botocore's request (it would be copied); its hash is given.
        request = AWSRequest(method="POST", url=self._url, data=b"", headers={
            # Signed as sent, whatever http.client would have made of the URL.
            "Host": self._host_header, "Content-Type": FIREHOSE.content_type,
            "X-Amz-Target": FIREHOSE.target,
        })
        request.context[_PAYLOAD_HASH] = hashlib.sha256(body).hexdigest()
        _Signer(frozen, FIREHOSE.signing_name, self.region).add_auth(request)
        headers = dict(request.headers.items())
        # Unsigned, as in botocore: proxies may rewrite them.
        headers["Content-Length"] = str(len(body))
        headers["User-Agent"] = USER_AGENT
        headers.update(self._extra_headers)
        return headers

    def _explain(self, exc: Exception, outcome: Outcome) -> None:
        """The details of a refusal the outcome's name alone cannot give, once per 10 s."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            self._refusals.error(
                "TLS: the certificate of %s could not be verified (%s), trusting the CAs in "
                "%s; set AWS_CA_BUNDLE or ca_bundle in the AWS config file to the CA that "
                "signed it. Nothing was sent; the events fail as %s",
                self._host_header, exc.verify_message or exc.reason, self._ca_bundle,
                outcome.error)
        elif isinstance(exc, ProxyRefused) and self._proxy is not None:
            hint = "; check the user and password in the proxy URL" \
                if exc.status == 407 else ""
            self._refusals.error(
                "proxy %s refused the tunnel to %s: %d %s%s. Nothing was sent; the events "
                "%s as %s", self._proxy.display, self._host_header, exc.status, exc.reason,
                hint, "are retried" if outcome.retryable else "fail", outcome.error)
        elif isinstance(exc, ProxyError) and self._proxy is not None:
            self._errors.warning("proxy %s: %s (retried)", self._proxy.display, exc)

    # -- the pool ---------------------------------------------------------------------------

    def _checkout(self) -> Connection:
        if self._pid != os.getpid():
            self.after_fork()  # forked without Python's hooks: still never share a socket
        while True:
            with self._pool_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._new_connection()
            if time.monotonic() - conn.idle_since < _MAX_IDLE_SECONDS and _usable(conn):
                return conn
            conn.close()

    def _checkin(self, conn: Connection) -> None:
        with self._pool_lock:
            if self._pid == os.getpid() and len(self._idle) < self._config.concurrency:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
                return
        conn.close()

    def _new_connection(self) -> Connection:
        return Connection(self._host, self._port, self._config.connect_timeout_seconds,
                          tls=self._ssl, proxy=self._proxy)


_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def plain_regional_endpoint(session: Any, region: str | None) -> str | None:
    """``https://firehose.{region}.{dnsSuffix}``, what botocore's endpoint rules give when
    nothing else applies, or None whenever anything else might (then botocore is asked).

    Asking botocore means building a client: ~100 ms of loading its JSON models, most of a
    Lambda's cold start. The answer is taken from botocore's own partition data; anything
    that could change it (an endpoint URL from the environment or the config files, FIPS,
    dual stack, a region no partition's pattern claims) falls back to botocore.
    """
    if not region or not _HOST_LABEL.fullmatch(region):
        return None  # botocore says what is wrong with it
    if any(key == "AWS_ENDPOINT_URL" or key.startswith("AWS_ENDPOINT_URL_") for key in os.environ):
        return None
    if session.get_config_variable("use_fips_endpoint") or session.get_config_variable(
            "use_dualstack_endpoint"):
        return None
    scoped = session.get_scoped_config()
    if "endpoint_url" in scoped or "services" in scoped:
        return None
    try:
        partitions = session.get_component("data_loader").load_data("partitions")
        for partition in partitions["partitions"]:
            if re.fullmatch(partition["regionRegex"], region):
                suffix = partition["outputs"]["dnsSuffix"]
                return f"https://{FIREHOSE.endpoint_prefix}.{region}.{suffix}"
    except (KeyError, TypeError, re.error):  # data shaped otherwise than expected
        return None
    return None


def _usable(conn: Connection) -> bool:
    """An idle keep-alive connection the server has not closed (nothing readable on it)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


def _classify(status: int, error_type: str | None, payload: bytes, count: int) -> Outcome:
    if 200 <= status < 300:
        try:
            return FIREHOSE.classify_response(orjson.loads(payload), count)
        except orjson.JSONDecodeError:
            return MALFORMED
    return FIREHOSE.classify_error(_error_code(error_type, payload), status)


def _error_code(error_type: str | None, payload: bytes) -> str | None:
    """The code of an AWS JSON error: ``__type`` (``"ns#Code"`` or ``"Code"``), else the
    ``x-amzn-ErrorType`` header (``"Code:url"``), as botocore reads them."""
    code: object = None
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        code = body.get("__type") or body.get("code") or body.get("Code")
    if not isinstance(code, str) or not code:
        code = error_type
    if not isinstance(code, str) or not code:
        return None
    return code.split(":", 1)[0].rsplit("#", 1)[-1] or None


def _failure(exc: Exception, cut_off: bool, sent: bool) -> Outcome:
    """Whether the records may have landed depends on whether the request started going out."""
    if cut_off:
        return Outcome(error="CallTimeout", retryable=True, unknown=sent)
    if not sent:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return Outcome(error="SSLCertVerificationError")
        if isinstance(exc, ProxyRefused):
            return _proxy_refused(exc.status)
        if isinstance(exc, ProxyError):
            return Outcome(error="ProxyConnectionError", retryable=True)
        if isinstance(exc, ssl.SSLError):
            return Outcome(error="SSLError", retryable=True)
        name = "ConnectTimeoutError" if isinstance(exc, TimeoutError) else \
            "EndpointConnectionError"
        return Outcome(error=name, retryable=True)
    if isinstance(exc, TimeoutError):
        return Outcome(error="ReadTimeoutError", retryable=True, unknown=True)
    if isinstance(exc, OSError | http.client.HTTPException):
        return Outcome(error="ConnectionClosedError", retryable=True, unknown=True)
    raise exc  # not the network's doing: send() logs it as a bug


_PAYLOAD_HASH = "firehose_buffer_payload_sha256"


class _Signer(SigV4Auth):
    """botocore's SigV4, with the payload's SHA-256 computed by the caller."""

    def payload(self, request: Any) -> str:
        digest: str = request.context[_PAYLOAD_HASH]
        return digest


def _proxy_refused(status: int) -> Outcome:
    """A proxy's answer to CONNECT: nothing reached Firehose, so never a possible duplicate.
    407 (credentials) and other 4xx are the proxy's settled refusal; 5xx and 429 may pass."""
    if status == 407:
        return Outcome(error="ProxyAuthenticationRequired")
    retryable = status >= 500 or status == 429
    return Outcome(error=f"ProxyHTTP{status}", retryable=retryable)


__all__ = ["LeanTransport"]
