"""A TCP relay that slows the server's side down: ``TrickleRelay(port)`` listens on
127.0.0.1 and, for one client, passes its bytes to ``port`` at once and the server's back one
byte per ``interval``. A TLS handshake through it trickles: every read is quick, so only a
bound on the whole call can end it.

With ``proxy_delay`` it first plays an HTTP proxy: it reads the client's CONNECT, waits that
long, answers 200, and relays as above (to ``port``, whatever the CONNECT named).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TrickleRelay:
    def __init__(self, port: int, interval: float = 0.1,
                 proxy_delay: float | None = None) -> None:
        self._port = port
        self._interval = interval
        self._proxy_delay = proxy_delay
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = [self._listener]
        self.port: int = self._listener.getsockname()[1]
        #: CONNECTs answered (with ``proxy_delay``).
        self.tunnels = 0
        self._thread = threading.Thread(target=self._serve, name="trickle-relay", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            client, _ = self._listener.accept()
            self._sockets.append(client)
            if self._proxy_delay is not None:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = client.recv(1)
                    if not chunk:
                        return
                    head += chunk
                if self._stop.wait(self._proxy_delay):
                    return
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.tunnels += 1
            upstream = socket.create_connection(("127.0.0.1", self._port))
            self._sockets.append(upstream)
        except OSError:
            return
        threading.Thread(target=self._pass, args=(client, upstream), daemon=True).start()
        while not self._stop.is_set():
            try:
                byte = upstream.recv(1)
                if not byte or self._stop.wait(self._interval):
                    return
                client.sendall(byte)
            except OSError:
                return

    @staticmethod
    def _pass(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def close(self) -> None:
        self._stop.set()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(5)
