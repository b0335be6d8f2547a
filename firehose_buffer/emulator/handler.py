"""The HTTP layer: Firehose's JSON 1.1 protocol over a threading HTTP/1.1 server.

Requests are ``POST /`` with ``X-Amz-Target: Firehose_20150804.<Op>``; their SigV4 signatures
are checked against the exact bytes received (see :mod:`.sigv4`) unless turned off.
Paths under ``/_emulator/`` go to the control API (see :mod:`.control`). Each connection gets
one thread; keep-alive connections are tracked so :meth:`EmulatorHTTPServer.close_connections`
can end them (their threads would otherwise sit in ``readline`` until the client hangs up).
With an ``ssl`` context the server speaks HTTPS: each connection's handshake runs on its own
thread, so a slow or silent client never holds up the others.
"""

from __future__ import annotations

import contextlib
import http
import itertools
import os
import socket
import ssl
import struct
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from . import sigv4
from .service import ApiError, FirehoseService
from .tls import HANDSHAKE_TIMEOUT_SECONDS

CONTENT_TYPE = "application/x-amz-json-1.1"
CONTROL_PREFIX = "/_emulator/"
# (method, path, query, body) -> (status, JSON body)
ControlHandler = Callable[[str, str, dict[str, str], bytes], tuple[int, bytes]]
_LINGER_RESET = struct.pack("ii", 1, 0)


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows its connection threads and can close them."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], service: FirehoseService, control: ControlHandler,
        credentials: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(address, FirehoseRequestHandler)
        #: Access key -> secret key whose signatures are accepted; None: not checked.
        self.credentials = credentials
        #: Server-side context when serving HTTPS.
        self.tls = tls
        self.service = service
        self.control = control
        self._connections_lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._thread_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self.request_id_prefix = os.urandom(6).hex()

    def next_request_id(self) -> str:
        return f"{self.request_id_prefix}-{next(self._request_ids):010d}"

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"firehose-emulator-conn-{next(self._thread_ids)}",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[thread] = request
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self.tls is not None:
                request = self._handshake(request)
                if request is None:
                    return
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)

    def _handshake(self, request: socket.socket) -> ssl.SSLSocket | None:
        assert self.tls is not None
        request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except OSError:  # a plain-HTTP client, one that refused our certificate, a hang-up
            with contextlib.suppress(OSError):
                request.close()
            return None
        wrapped.settimeout(None)
        with self._connections_lock:
            # The plain socket was detached by the wrap: track the one that owns the fd now.
            self._connections[threading.current_thread()] = wrapped
        return wrapped

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-request is routine (and what stop() does); stay quiet.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Shut every open connection down and wait for its thread to end."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for _, sock in connections:
            # It may already be closed by a reset fault or the client. The plain socket's
            # shutdown, also for TLS: SSLSocket.shutdown would drop the SSL object under the
            # thread still reading through it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        for thread, _ in connections:
            thread.join(timeout)


class FirehoseRequestHandler(BaseHTTPRequestHandler):
    """One connection's requests; lean on purpose, it is the emulator's hot path."""

    server: EmulatorHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "FirehoseEmulator"
    sys_version = ""
    # Headers and body go out in one send; no Nagle so small answers are not held back.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: one line per request would cost more than handling it."""

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        if self.path.startswith(CONTROL_PREFIX):
            self._control("POST", body)
            return
        credentials = self.server.credentials
        if credentials is not None:
            refused = sigv4.verify("POST", self.path, self.headers, body, credentials)
            if refused is not None:
                self._send(refused.status, refused.body())
                return
        target = self.headers.get("X-Amz-Target", "")
        try:
            response = self.server.service.handle(target, body)
        except ApiError as exc:
            self._send(exc.status, exc.body())
            return
        except Exception as exc:  # a bug in the emulator must not hang the client
            self._send(500, orjson.dumps({"__type": "InternalFailure", "message": repr(exc)}))
            raise
        if response.reset:
            self._reset()
        else:
            self._send(200, response.body)

    def do_GET(self) -> None:
        if self.path.startswith(CONTROL_PREFIX):
            self._control("GET", b"")
        else:
            self._send(404, orjson.dumps({"message": "the Firehose API is POST /"}))

    def _control(self, method: str, body: bytes) -> None:
        parts = urlsplit(self.path)
        status, payload = self.server.control(
            method, parts.path[len(CONTROL_PREFIX):], dict(parse_qsl(parts.query)), body
        )
        self._send(status, payload, "application/json")

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        if "Transfer-Encoding" in self.headers:
            # Neither botocore nor the CLI send chunked bodies; not worth supporting.
            self.close_connection = True
            self._send(411, orjson.dumps({"message": "Content-Length required"}))
            return None
        return b""  # HTTP/1.1: no length and no transfer coding means no body

    def _send(self, status: int, body: bytes, content_type: str = CONTENT_TYPE) -> None:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        head = (
            f"HTTP/1.1 {status} {phrase}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-amzn-RequestId: {self.server.next_request_id()}\r\n"
            + ("Connection: close\r\n" if self.close_connection else "")
            + "\r\n"
        ).encode("latin-1")
        self.wfile.write(head + body)

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send RST instead of FIN. The socket really closes when
        # finish() closes rfile; the server's later shutdown() of it then fails quietly.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.close_connection = True
        self.connection.close()
