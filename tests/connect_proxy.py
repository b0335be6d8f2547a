"""A small HTTP proxy for tests, run as a process of its own.

    python tests/connect_proxy.py [--port PORT] [--user USER --password PASSWORD]

It does what corporate proxies do for AWS SDKs: ``CONNECT host:port`` opens a tunnel (HTTPS
goes through it, encrypted end to end), and a request whose target is an absolute
``http://`` URL is forwarded (plain HTTP). With ``--user``/``--password`` every request must
carry ``Proxy-Authorization: Basic`` with them, or is answered 407. Only 127.0.0.1 and
localhost are reachable through it (anything else: 403), so nothing leaves the machine.

Once serving it prints ``listening on http://127.0.0.1:PORT``. ``GET /_proxy/stats`` (an
origin-form request to the proxy itself, no credentials) answers JSON counts: ``tunnels``
opened, requests ``forwarded``, ``refused`` (407), ``forbidden`` (403), and the bytes
relayed through tunnels each way (``bytes_up`` from clients, ``bytes_down`` to them).
SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import select
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

ALLOWED_HOSTS = {"127.0.0.1", "localhost"}
HOP_BY_HOP = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, credentials: str | None, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), ProxyHandler)
        self.expected = None if credentials is None else \
            "Basic " + base64.b64encode(credentials.encode()).decode()
        self.lock = threading.Lock()
        self.counts = {"tunnels": 0, "forwarded": 0, "refused": 0, "forbidden": 0,
                       "bytes_up": 0, "bytes_down": 0}

    def count(self, name: str, by: int = 1) -> None:
        with self.lock:
            self.counts[name] += by

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients and upstreams hanging up mid-relay is routine here."""


class ProxyHandler(BaseHTTPRequestHandler):
    server: ProxyServer
    protocol_version = "HTTP/1.1"
    # Unbuffered: after a CONNECT's headers, not one byte of the tunnel may sit in a buffer.
    rbufsize = 0

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced."""

    # -- CONNECT: a tunnel --------------------------------------------------------------------

    def do_CONNECT(self) -> None:
        if not self._authorized():
            return
        host, _, port = self.path.rpartition(":")
        host = host.strip("[]")
        if host not in ALLOWED_HOSTS or not port.isdigit():
            self._refuse(403, "Forbidden", "forbidden")
            return
        try:
            upstream = socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            self._refuse(502, "Bad Gateway", None)
            return
        self.server.count("tunnels")
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        with upstream:
            self._relay(self.connection, upstream)

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        client.settimeout(None)
        upstream.settimeout(None)
        ends = {client: (upstream, "bytes_up"), upstream: (client, "bytes_down")}
        while True:
            readable, _, _ = select.select(list(ends), [], [], 60)
            if not readable:
                return
            for sock in readable:
                other, counter = ends[sock]
                try:
                    data = sock.recv(65536)
                    if not data:
                        return
                    other.sendall(data)
                except OSError:
                    return
                self.server.count(counter, len(data))

    # -- absolute-form requests: forwarded ----------------------------------------------------

    def do_GET(self) -> None:
        if self.path == "/_proxy/stats":
            with self.server.lock:
                body = json.dumps(self.server.counts).encode()
            self._answer(200, "OK", body, {"Content-Type": "application/json"})
            return
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = _read_exactly(self.rfile, length)
        if not self._authorized():
            return
        target = urlsplit(self.path)
        if target.scheme != "http" or target.hostname not in ALLOWED_HOSTS:
            self._refuse(403, "Forbidden", "forbidden")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
        try:
            upstream.request(self.command, target.path or "/", body, headers)
            response = upstream.getresponse()
            payload = response.read()
        except OSError:
            self._refuse(502, "Bad Gateway", None)
            return
        finally:
            upstream.close()
        self.server.count("forwarded")
        passed = {k: v for k, v in response.getheaders()
                  if k.lower() not in HOP_BY_HOP | {"content-length", "transfer-encoding"}}
        self._answer(response.status, response.reason, payload, passed)

    # -- helpers --------------------------------------------------------------------------------

    def _authorized(self) -> bool:
        expected = self.server.expected
        if expected is None or self.headers.get("Proxy-Authorization") == expected:
            return True
        self.server.count("refused")
        self.close_connection = True
        self._answer(407, "Proxy Authentication Required", b"",
                     {"Proxy-Authenticate": 'Basic realm="tests"', "Connection": "close"})
        return False

    def _refuse(self, status: int, reason: str, counter: str | None) -> None:
        if counter is not None:
            self.server.count(counter)
        self.close_connection = True
        self._answer(status, reason, b"", {"Connection": "close"})

    def _answer(self, status: int, reason: str, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status, reason)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)


def _read_exactly(stream: Any, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = stream.read(size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--user", default=None)
    parser.add_argument("--password", default=None)
    args = parser.parse_args(argv)
    credentials = None if args.user is None else f"{args.user}:{args.password or ''}"
    server = ProxyServer(credentials, args.port)
    sys.stdout.write(f"listening on http://127.0.0.1:{server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever(poll_interval=0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
