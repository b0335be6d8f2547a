"""How the lean transport reaches the endpoint: straight there or through an HTTP proxy, and
over TLS for an ``https://`` endpoint.

Proxies are chosen as botocore chooses them, with botocore's own functions: the ``proxies``
setting when given (it replaces the environment), else ``HTTPS_PROXY`` / ``HTTP_PROXY``
(lower case wins, as in urllib) unless ``NO_PROXY`` names the endpoint; picked by the
endpoint's scheme; a proxy URL without a scheme is ``http://``; credentials in it become a
``Proxy-Authorization: Basic`` header. An ``https://`` endpoint is reached through a CONNECT
tunnel (TLS inside it, end to end with the endpoint); an ``http://`` one by sending the
request to the proxy with the absolute URL as its target. A proxy spoken to over TLS
(an ``https://`` proxy URL) is not supported here.

Every step that can block after the TCP connect (the CONNECT exchange, the TLS handshake)
runs on ``conn.sock`` as the deadline watchdog sees it, so a silent proxy or a handshake
that trickles is cut at the call's deadline like a slow answer is. (CPython bounds a whole
handshake by the socket's timeout, but that is the time left when the TCP connect began:
a tunnel slow to open would push the handshake's end past the deadline. ``http.client``'s
HTTPSConnection wraps the socket where the watchdog cannot reach it.)
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ._deadline import Armed

#: A CONNECT answer's status line and headers; anything longer is not a proxy talking.
_MAX_CONNECT_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Proxy:
    """The proxy a transport's connections go through (``choose_proxy`` picks it from the
    config or the environment)."""

    host: str
    port: int
    #: The proxy URL with its credentials masked, for messages.
    display: str
    #: ``Proxy-Authorization`` when the URL carries credentials.
    headers: Mapping[str, str] = field(default_factory=dict)


class ProxyError(OSError):
    """Reaching the proxy or its CONNECT exchange failed: nothing reached the endpoint."""


class ProxyRefused(ProxyError):
    """The proxy answered CONNECT with a status other than 200."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the proxy answered CONNECT with {status} {reason}")
        self.status = status
        self.reason = reason


def choose_proxy(endpoint_url: str, proxies: Mapping[str, str] | None) -> Proxy | None:
    """The proxy botocore would use for ``endpoint_url``, or None to go straight there."""
    from botocore.httpsession import ProxyConfiguration, mask_proxy_url  # noqa: PLC0415
    from botocore.utils import get_environ_proxies  # noqa: PLC0415

    chosen = dict(proxies) if proxies is not None else get_environ_proxies(endpoint_url)
    settings = ProxyConfiguration(proxies=chosen)
    url = settings.proxy_url_for(endpoint_url)
    if not url:
        return None
    display = mask_proxy_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
        headers = settings.proxy_headers_for(url)
    except (ValueError, UnicodeError) as exc:
        raise ConfigurationError(f"invalid proxy URL {display!r}: {exc}") from None
    if parts.scheme != "http":
        raise ConfigurationError(
            f"proxy {display!r}: only http:// proxies are supported by the buffer's own "
            "client (HTTPS to Firehose still goes through them in a CONNECT tunnel, "
            "encrypted end to end); for a TLS proxy, pass a boto3 client")
    if not parts.hostname:
        raise ConfigurationError(f"invalid proxy URL {display!r}: no host")
    return Proxy(parts.hostname, port or 80, display, headers)


class Connection(http.client.HTTPConnection):
    """One keep-alive connection to the endpoint, maybe through a proxy, maybe over TLS.

    ``armed`` is the current call's deadline registration, set before :meth:`connect`: the
    handshake checks it once the TLS socket is where the watchdog looks (a cut that came
    while it was being wrapped found no socket to shut down).
    """

    def __init__(self, host: str, port: int, timeout: float, *,
                 tls: ssl.SSLContext | None, proxy: Proxy | None) -> None:
        super().__init__(host, port, timeout=timeout)
        if tls is not None:
            self.default_port = 443  # the Host header leaves out the scheme's default port
        self._tls = tls
        self._proxy = proxy
        self.armed: Armed | None = None
        #: When it last went back to the pool (monotonic seconds).
        self.idle_since = 0.0

    def connect(self) -> None:
        proxy = self._proxy
        if proxy is None:
            self.sock = socket.create_connection((self.host, self.port), self.timeout)
        else:
            try:
                self.sock = socket.create_connection((proxy.host, proxy.port), self.timeout)
            except OSError as exc:
                raise ProxyError(f"cannot connect to the proxy {proxy.display}: {exc}") \
                    from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy is not None and self._tls is not None:
            self._tunnel_through(proxy, self.sock)
        if self._tls is not None:
            sock = self._tls.wrap_socket(self.sock, server_hostname=self.host,
                                         do_handshake_on_connect=False)
            self.sock = sock
            if self.armed is not None and self.armed.fired:
                raise TimeoutError("deadline reached before the TLS handshake")
            sock.do_handshake()

    def _tunnel_through(self, proxy: Proxy, sock: socket.socket) -> None:
        """CONNECT host:port, as urllib3 sends it; the answer must be 200."""
        authority = f"[{self.host}]" if ":" in self.host else self.host
        lines = [f"CONNECT {authority}:{self.port} HTTP/1.1", f"Host: {authority}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in proxy.headers.items()]
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            status, reason = _read_connect_answer(sock)
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                raise  # a timeout, whoever caused it
            raise ProxyError(f"the proxy {proxy.display} broke off CONNECT: {exc}") from exc
        if status != 200:
            raise ProxyRefused(status, reason)


def _read_connect_answer(sock: socket.socket) -> tuple[int, str]:
    """Status and reason of the proxy's answer, reading up to the blank line and no further
    (the bytes after it are the endpoint's, and TLS has the client speak first anyway)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_CONNECT_ANSWER_BYTES:
            raise ProxyError("the proxy's answer to CONNECT has no end")
        chunk = sock.recv(1)
        if not chunk:
            raise ProxyError("the proxy closed the connection during CONNECT")
        data += chunk
    status_line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProxyError(f"not an HTTP answer to CONNECT: {status_line[:100]!r}")
    return int(parts[1]), parts[2].strip() if len(parts) > 2 else ""


def host_header(endpoint_url: str) -> str:
    """The Host header botocore signs: the port only when it is not the scheme's default."""
    parts = urlsplit(endpoint_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme)
    if parts.port is not None and parts.port != default:
        host = f"{host}:{parts.port}"
    return host

