"""SigV4 checking of the exact bytes received, written from the specification (not botocore's
signer), so that a client signing one body and sending another is caught.

Only what a signature covers is checked: the canonical request (method, path, query, the
signed headers, SHA-256 of the body) and the key derived from the secret, date, region and
service named in the credential scope. The request's age is not checked (tests run fake
clocks). Errors are answered as Firehose's JSON protocol does: 400 with
``InvalidSignatureException``, ``UnrecognizedClientException`` for an unknown access key,
``IncompleteSignatureException`` for a malformed header, and 403
``MissingAuthenticationTokenException`` when there is none.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from email.message import Message
from urllib.parse import quote, unquote

from .service import ApiError

ALGORITHM = "AWS4-HMAC-SHA256"
#: The fake credentials tests and the demo use; the emulator accepts these unless told otherwise.
DEFAULT_CREDENTIALS: Mapping[str, str] = {"testing": "testing"}
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),"
    r"\s*Signature=([0-9a-f]{64})\s*$"
)
_SPACES = re.compile(r"\s+")


def verify(
    method: str, target: str, headers: Message, body: bytes, secrets: Mapping[str, str]
) -> ApiError | None:
    """None if the request is signed by one of ``secrets`` (access key -> secret key)."""
    authorization = headers.get("Authorization")
    if not authorization:
        return ApiError(403, "MissingAuthenticationTokenException",
                        "Missing Authentication Token")
    match = _AUTH.match(authorization)
    if match is None:
        return ApiError(400, "IncompleteSignatureException",
                        "Authorization header requires 'Credential', 'SignedHeaders' and "
                        "'Signature' parameters of the AWS4-HMAC-SHA256 algorithm.")
    credential, signed, signature = match.groups()
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        return ApiError(400, "IncompleteSignatureException",
                        f"Credential scope is malformed: {credential}")
    access_key, date, region, service, _ = parts
    secret = secrets.get(access_key)
    if secret is None:
        return ApiError(400, "UnrecognizedClientException",
                        "The security token included in the request is invalid.")
    names = signed.split(";")
    if "host" not in names or names != sorted(names):
        return ApiError(400, "IncompleteSignatureException",
                        "SignedHeaders must include host and be sorted.")
    amz_date = headers.get("X-Amz-Date") or ""
    if not amz_date.startswith(date):
        return ApiError(400, "IncompleteSignatureException",
                        "Date in Credential scope does not match X-Amz-Date.")
    canonical = "\n".join((
        method,
        _canonical_path(target),
        _canonical_query(target),
        "".join(f"{name}:{_header_value(headers, name)}\n" for name in names),
        signed,
        hashlib.sha256(body).hexdigest(),
    ))
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join((ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()))
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if hmac.compare_digest(expected, signature):
        return None
    return ApiError(
        400, "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service "
        "documentation for details.",
    )


def _header_value(headers: Message, name: str) -> str:
    values = headers.get_all(name) or []
    return ",".join(_SPACES.sub(" ", v.strip()) for v in values)


def _canonical_path(target: str) -> str:
    path = target.split("?", 1)[0] or "/"
    return quote(unquote(path), safe="/~")


def _canonical_query(target: str) -> str:
    if "?" not in target:
        return ""
    pairs = []
    for item in target.split("?", 1)[1].split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))
