"""HTTPS for the emulator: a throwaway CA made at start, a certificate it signs for the
addresses the emulator answers on, and the CA's certificate in a file for clients to trust.

Made with ``trustme`` (the ``emulator-tls`` extra), imported only when TLS is asked for.
Nothing is written but the CA's certificate (its key stays in memory and dies with the
process), in a directory of its own that :meth:`Certificates.remove` deletes.
"""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import tempfile
from pathlib import Path

from firehose_buffer.errors import ConfigurationError

EXTRA = "emulator-tls"
#: A client that connects and never finishes its handshake holds one thread this long.
HANDSHAKE_TIMEOUT_SECONDS = 10.0


def require_trustme() -> None:
    """Raise ConfigurationError naming the extra when trustme is not installed."""
    try:
        import trustme  # noqa: F401, PLC0415
    except ImportError as exc:
        raise ConfigurationError(
            "the emulator's TLS (LocalFirehose(tls=True), --tls) needs the trustme package: "
            f"pip install 'firehose-buffer[{EXTRA}]'"
        ) from exc


class Certificates:
    """A CA, a server certificate for ``host`` (plus 127.0.0.1 and localhost), and the
    server-side ``ssl`` context that presents it."""

    def __init__(self, host: str) -> None:
        require_trustme()
        import trustme  # noqa: PLC0415

        ca = trustme.CA(organization_name="firehose-buffer emulator (throwaway)")
        leaf = ca.issue_cert(*_identities(host))
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(self.context)
        self._dir = Path(tempfile.mkdtemp(prefix="firehose-emulator-tls-"))
        self.ca_file = self._dir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))

    def remove(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def _identities(host: str) -> list[str]:
    names = ["127.0.0.1", "localhost"]
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    # A wildcard bind address names no host a client could connect to.
    if host and not unspecified and host not in names:
        names.insert(0, host)
    return names
