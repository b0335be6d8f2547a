"""A deliberately hostile Firehose on 127.0.0.1, for tests that a bad answer jams nothing.

It speaks enough of PutRecordBatch to act like the service (JSON 1.1 body in, base64 records
decoded and stored line by line, a success answer out), and takes a script for the next
calls: each :class:`Answer` says how to answer one call (a malformed 200 body, headers then
a body trickled a byte at a time, a connection reset, no answer at all) and whether the
records are stored first, as the real service may have done before its answer went wrong.
Calls past the script are answered like Firehose would.

``stop()`` cuts every open connection, so a trickle or a hang never outlives the test.

``answer_delay`` makes every call take that long before it is answered (a slow service), and
the server counts how many calls it was handling at once (``max_concurrent``). With ``tls=``
(a server-side ``ssl`` context) it speaks HTTPS, each handshake on the connection's own
thread.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import select
import socket
import ssl
import struct
import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import orjson

PUT_RECORD_BATCH = "Firehose_20150804.PutRecordBatch"


class Behaviour(enum.StrEnum):
    """How one scripted call is answered."""

    #: HTTP 200, ``RequestResponses`` holds ``null`` entries.
    NULL_ENTRIES = "null_entries"
    #: HTTP 200, ``RequestResponses`` holds numbers instead of objects.
    NUMBER_ENTRIES = "number_entries"
    #: HTTP 200, ``RequestResponses`` holds strings instead of objects.
    STRING_ENTRIES = "string_entries"
    #: HTTP 200, ``RequestResponses`` is an object, not a list.
    NOT_A_LIST = "not_a_list"
    #: HTTP 200, one entry fewer than records sent.
    WRONG_LENGTH = "wrong_length"
    #: HTTP 200, a body that is not JSON.
    NOT_JSON = "not_json"
    #: HTTP 200, ``FailedPutCount`` is a string and entries lack ``RecordId``.
    GARBAGE_FIELDS = "garbage_fields"
    #: Headers of a 200 at once, then the body one byte per ``trickle_interval``.
    TRICKLE = "trickle"
    #: A TCP RST instead of an answer.
    RESET = "reset"
    #: No answer until the server stops.
    HANG = "hang"
    #: Answered (and stored) as Firehose would, keeping the connection open; the next request
    #: on that connection is met with a TCP RST before a byte of it is read, as when a
    #: server's idle timeout closes a keep-alive connection just as the client reuses it.
    STALE_KEEPALIVE = "stale_keepalive"
    #: Answered (and stored) as Firehose would, with no ``Connection: close``; then the
    #: server closes the connection (a FIN), as its idle timeout does.
    IDLE_CLOSE = "idle_close"
    #: HTTP 200, ``FailedPutCount`` 0, and entries that carry neither ``RecordId`` nor
    #: ``ErrorCode`` (an endpoint that does not conform: the records may well be stored).
    NO_IDS = "no_ids"


#: Answers that are an HTTP 200 with a body botocore parses, but that is not Firehose's shape.
MALFORMED_200 = (
    Behaviour.NULL_ENTRIES, Behaviour.NUMBER_ENTRIES, Behaviour.STRING_ENTRIES,
    Behaviour.NOT_A_LIST, Behaviour.WRONG_LENGTH, Behaviour.NOT_JSON, Behaviour.GARBAGE_FIELDS,
)


@dataclass(frozen=True, slots=True)
class Answer:
    """One scripted call: how it is answered, and whether its records are stored first."""

    behaviour: Behaviour
    store: bool = True
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """One PutRecordBatch call as received."""

    stream: str
    lines: list[bytes]
    behaviour: Behaviour | None
    #: The client's (host, port): one per TCP connection.
    peer: tuple[str, int] = ("", 0)


class HostileFirehose:
    """``with HostileFirehose() as server:`` then point a client at ``server.endpoint_url``."""

    def __init__(self, *, trickle_interval: float = 0.5, answer_delay: float = 0.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.trickle_interval = trickle_interval
        #: Seconds every PutRecordBatch call waits (its request read) before it is answered.
        self.answer_delay = answer_delay
        self.tls = tls
        self._lock = threading.Lock()
        self._active = 0
        #: The most PutRecordBatch calls handled at the same time.
        self.max_concurrent = 0
        #: PutRecordBatch requests read in full (answered or not).
        self.requests_received = 0
        #: Requests refused with a reset before any byte of them was read.
        self.requests_unread = 0
        self._script: deque[Answer] = deque()
        self._lines: dict[str, list[bytes]] = defaultdict(list)
        self._record_ids = 0
        #: Every PutRecordBatch call, in order: its stream, lines, and scripted behaviour.
        self.calls: list[Call] = []
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="hostile-firehose", daemon=True,
        )

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> HostileFirehose:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every connection (ends trickles and hangs); idempotent."""
        self.stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain one, TLS or not
        self._server.server_close()  # joins the handler threads

    def __enter__(self) -> HostileFirehose:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    # -- script and results -------------------------------------------------------------

    def script(self, *answers: Answer) -> None:
        """Queue answers for the next calls (to ``answer.stream``, or to any stream)."""
        with self._lock:
            self._script.extend(answers)

    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    def lines(self, stream: str) -> list[bytes]:
        """Every line stored for ``stream``, in the order stored (duplicates included)."""
        with self._lock:
            return list(self._lines[stream])

    def all_calls(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def scripted_calls(self) -> list[Call]:
        """The calls that consumed a scripted answer, in order."""
        with self._lock:
            return [c for c in self.calls if c.behaviour is not None]

    # -- the handler's side -------------------------------------------------------------

    def _next_answer(self, stream: str) -> Answer | None:
        with self._lock:
            for i, answer in enumerate(self._script):
                if answer.stream is None or answer.stream == stream:
                    del self._script[i]
                    return answer
        return None

    def _store(self, stream: str, records: list[bytes]) -> list[str]:
        with self._lock:
            ids = []
            for data in records:
                lines = data[:-1].split(b"\n") if data.endswith(b"\n") else data.split(b"\n")
                self._lines[stream].extend(lines)
                self._record_ids += 1
                ids.append(f"record-{self._record_ids}")
            return ids

    def open_connections(self) -> int:
        """Client connections the server holds open now."""
        with self._lock:
            return len(self._connections)

    def _register(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.add(sock)

    def _unregister(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)

    def _record_call(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    @contextlib.contextmanager
    def _handling(self) -> Iterator[None]:
        with self._lock:
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler],
                 owner: HostileFirehose) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        tls = self.owner.tls
        if tls is not None:  # on the connection's thread: a slow handshake holds up no other
            request.settimeout(5.0)
            request = tls.wrap_socket(request, server_side=True)
            request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up is what this server provokes: stay quiet about it."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced."""

    def setup(self) -> None:
        super().setup()
        self.server.owner._register(self.connection)

    def handle_one_request(self) -> None:
        if getattr(self, "reset_next", False):
            # Wait for the next request to arrive, then reset without reading it.
            owner = self.server.owner
            while not owner.stopping.is_set():
                readable, _, _ = select.select([self.connection], [], [], 0.05)
                if readable:
                    with owner._lock:
                        owner.requests_unread += 1
                    break
            self._reset()
            return
        super().handle_one_request()

    def finish(self) -> None:
        self.server.owner._unregister(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with owner._lock:
            owner.requests_received += 1
        with owner._handling():
            if owner.answer_delay and owner.stopping.wait(owner.answer_delay):
                self.close_connection = True
                return
            self._answer(owner, body)

    def _answer(self, owner: HostileFirehose, body: bytes) -> None:
        if self.headers.get("X-Amz-Target", "") != PUT_RECORD_BATCH:
            self._send(400, orjson.dumps({"__type": "UnknownOperationException",
                                          "message": "only PutRecordBatch here"}))
            return
        try:
            request = orjson.loads(body)
            stream = str(request["DeliveryStreamName"])
            records = [base64.b64decode(r["Data"], validate=True) for r in request["Records"]]
        except (ValueError, KeyError, TypeError):
            # What Firehose answers a body it cannot read (two writers on one connection...).
            owner._record_call(Call("", [], None, self._peer()))
            self._send(400, orjson.dumps({"__type": "SerializationException"}))
            return
        answer = owner._next_answer(stream)
        owner._record_call(Call(stream, [line for r in records for line in r.splitlines()],
                                None if answer is None else answer.behaviour, self._peer()))
        if answer is None:
            ids = owner._store(stream, records)
            self._send(200, _success(ids))
            return
        ids = owner._store(stream, records) if answer.store else [
            f"unstored-{i}" for i in range(len(records))
        ]
        self._misbehave(answer.behaviour, ids)

    def _peer(self) -> tuple[str, int]:
        host, port = self.client_address[:2]
        return (str(host), int(port))

    def _misbehave(self, behaviour: Behaviour, ids: list[str]) -> None:
        count = len(ids)
        owner = self.server.owner
        if behaviour is Behaviour.NULL_ENTRIES:
            self._send(200, orjson.dumps({"FailedPutCount": 0, "RequestResponses": [None] * count}))
        elif behaviour is Behaviour.NUMBER_ENTRIES:
            self._send(200, orjson.dumps({"FailedPutCount": 0,
                                          "RequestResponses": list(range(count))}))
        elif behaviour is Behaviour.STRING_ENTRIES:
            self._send(200, orjson.dumps({"FailedPutCount": 0, "RequestResponses": ids}))
        elif behaviour is Behaviour.NOT_A_LIST:
            self._send(200, orjson.dumps({"FailedPutCount": 0,
                                          "RequestResponses": {"RecordId": ids[0]}}))
        elif behaviour is Behaviour.WRONG_LENGTH:
            self._send(200, _success(ids[:-1]))
        elif behaviour is Behaviour.NOT_JSON:
            self._send(200, b"<html><body>200 OK, probably</body></html>")
        elif behaviour is Behaviour.GARBAGE_FIELDS:
            self._send(200, orjson.dumps({"FailedPutCount": "none",
                                          "RequestResponses": [{"Id": i} for i in ids]}))
        elif behaviour is Behaviour.TRICKLE:
            self._trickle(_success(ids).ljust(16384))
        elif behaviour is Behaviour.RESET:
            self._reset()
        elif behaviour is Behaviour.STALE_KEEPALIVE:
            self._send(200, _success(ids))
            self.reset_next = True
        elif behaviour is Behaviour.IDLE_CLOSE:
            self._send(200, _success(ids))
            self.close_connection = True
        elif behaviour is Behaviour.HANG:
            owner.stopping.wait()
            self.close_connection = True
        elif behaviour is Behaviour.NO_IDS:
            self._send(200, orjson.dumps({"FailedPutCount": 0,
                                          "RequestResponses": [{} for _ in ids]}))

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", "hostile")
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, body: bytes) -> None:
        """A 200 whose every byte arrives well within any per-read timeout, forever."""
        owner = self.server.owner
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        for i in range(len(body)):
            if owner.stopping.wait(owner.trickle_interval):
                break
            try:
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
            except OSError:
                break
        self.close_connection = True

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send a RST instead of a FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.close()


def _success(ids: list[str]) -> bytes:
    return orjson.dumps({
        "FailedPutCount": 0,
        "Encrypted": False,
        "RequestResponses": [{"RecordId": i} for i in ids],
    })
