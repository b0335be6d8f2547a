"""What TLS adds to the floor of a signed request (base64 of the records, SHA-256 of the
body): encrypting the body as the client's side of a TLS connection does.

The encryption is measured on an in-memory pair of ``ssl`` objects (``SSLContext.wrap_bio``,
the same OpenSSL record layer a socket uses, with the cipher the handshake agrees on) after a
real handshake with a throwaway certificate: the CPU of ``SSLObject.write`` plus draining the
encrypted records, no socket and no kernel, so the figure is the cipher's cost alone, as the
plain floor leaves out the kernel's TCP work too.
"""

from __future__ import annotations

import ssl
import statistics
import time
from collections.abc import Sequence

from firehose_buffer._service.firehose import FIREHOSE

STREAM = "floor-0"
_PIECE = 64 * 1024


class TlsPair:
    """A client and a server ``SSLObject`` joined by memory BIOs, handshake done."""

    def __init__(self) -> None:
        import trustme  # noqa: PLC0415  (the test extra; benchmarks run with it)

        ca = trustme.CA()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        self._to_server, self._to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._client_in, self._server_in = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_ctx.wrap_bio(self._client_in, self._to_server,
                                          server_hostname="127.0.0.1")
        self.server = server_ctx.wrap_bio(self._server_in, self._to_client, server_side=True)
        self._handshake()
        cipher = self.client.cipher()
        self.cipher = f"{cipher[1]} {cipher[0]}" if cipher else "?"

    def _handshake(self) -> None:
        done = {"client": False, "server": False}
        for _ in range(20):
            for name, side in (("client", self.client), ("server", self.server)):
                if done[name]:
                    continue
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
                self._server_in.write(self._to_server.read())
                self._client_in.write(self._to_client.read())
            if all(done.values()):
                return
        raise RuntimeError("the in-memory TLS handshake did not finish")

    def encrypt(self, body: bytes) -> int:
        """Write ``body`` as the client would send it; returns the bytes of TLS records.

        In 64 KiB pieces, each drained at once, as a socket's send buffer takes them: one
        write of the whole body would have the memory BIO grow to its size and the figure
        count fresh pages, not the cipher."""
        view = memoryview(body)
        out = 0
        while view:
            written = self.client.write(view[:_PIECE])
            view = view[written:]
            out += len(self._to_server.read())
        return out


def encrypt_seconds(pair: TlsPair, body: bytes, calls: int) -> float:
    """Median thread CPU seconds to encrypt ``body`` once."""
    times = []
    for _ in range(calls):
        cpu = time.thread_time()
        pair.encrypt(body)
        times.append(time.thread_time() - cpu)
    return statistics.median(times)


def encrypt_ns_per_byte(records: Sequence[bytes], calls: int = 5) -> tuple[float, str]:
    """CPU ns per record byte to encrypt the request body carrying ``records``, and the
    cipher. Added to the b64+sha256 floor, measured apart: timed together, the two share
    (or do not) the pages of freed 5 MB buffers, and the sum came out below its part."""
    pair = TlsPair()
    body = FIREHOSE.build_body(STREAM, records)
    pair.encrypt(body)  # warm
    return encrypt_seconds(pair, body, calls) * 1e9 / sum(map(len, records)), pair.cipher
