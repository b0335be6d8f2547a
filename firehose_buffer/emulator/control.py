"""The control API under ``/_emulator/``, for driving an emulator in another process.

All bodies are JSON. Endpoints:

``GET  /_emulator/health``
    ``{"ok": true, "streams": [...]}``.
``GET  /_emulator/stats[?stream=NAME]``
    :class:`~.stats.Stats` as JSON (``Stats.to_json``); without ``stream`` the total plus
    ``"streams": {name: stats}``.
``POST /_emulator/faults``
    ``{"script": [fault, ...], "rates": {...} | null, "seed": N, "clear": bool}``: ``clear``
    empties the script first, ``script`` appends faults (``Fault.to_json`` form, e.g.
    ``{"kind": "http_error", "status": 500}``), ``rates`` replaces the random rates
    (``FaultRates`` field names) and reseeds with ``seed``.
``POST /_emulator/quota``
    ``{"stream": NAME | null, "preset": "standard" | "high", "requests_per_second": ...,
    "bytes_per_second": ..., "records_per_second": ...}``: fields not given keep the current
    values (of the stream, or of the default when ``stream`` is null).
``POST /_emulator/streams``
    ``{"name": NAME, "quota": {...} | null, "file_extension": ".jsonl.zst" | null}``:
    creates a stream (``file_extension`` ends its delivered files' names).
``POST /_emulator/flush``
    writes all pending records now; answers ``{"files": {stream: [path, ...]}}``.
``GET  /_emulator/files?stream=NAME``
    ``{"files": [path, ...]}`` in the order written.

:class:`EmulatorControl` is a small stdlib client for these.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from firehose_buffer.quota import Quota

from .faults import Fault, FaultRates
from .service import ApiError, FirehoseService
from .stats import Stats


def _quota_from(data: Mapping[str, Any], base: Quota) -> Quota:
    preset = data.get("preset")
    quota = Quota.named(str(preset)) if preset else base
    overrides = {
        k: float(data[k])
        for k in ("requests_per_second", "bytes_per_second", "records_per_second")
        if data.get(k) is not None
    }
    return replace(quota, **overrides) if overrides else quota


class ControlApi:
    """Server side: maps ``(method, path, query, body)`` to ``(status, JSON body)``."""

    def __init__(self, service: FirehoseService) -> None:
        self._service = service

    def __call__(
        self, method: str, path: str, query: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        try:
            data = orjson.loads(body) if body else {}
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            result = self._dispatch(method, path.strip("/"), query, data)
        except ApiError as exc:
            return exc.status, exc.body()
        except (KeyError, ValueError, TypeError) as exc:
            return 400, orjson.dumps({"message": f"{type(exc).__name__}: {exc}"})
        if result is None:
            return 404, orjson.dumps({"message": f"no control endpoint {method} {path}"})
        return 200, orjson.dumps(result)

    def _dispatch(
        self, method: str, path: str, query: dict[str, str], data: dict[str, Any]
    ) -> dict[str, Any] | None:
        service = self._service
        if method == "GET" and path == "health":
            return {"ok": True, "streams": service.stream_names()}
        if method == "GET" and path == "stats":
            if "stream" in query:
                return service.stats(query["stream"]).to_json()
            result = service.stats().to_json()
            result["streams"] = {
                name: service.stats(name).to_json() for name in service.stream_names()
            }
            return result
        if method == "GET" and path == "files":
            return {"files": [str(p) for p in service.delivery.files(query["stream"])]}
        if method != "POST":
            return None
        if path == "faults":
            if data.get("clear"):
                service.faults.clear_script()
            service.faults.script(Fault.from_json(f) for f in data.get("script") or ())
            if data.get("rates") is not None:
                service.faults.set_rates(FaultRates(**data["rates"]), data.get("seed"))
            return {"pending": service.faults.pending, "rates": service.faults.rates.to_json()}
        if path == "quota":
            stream = data.get("stream")
            base = service.quota_of(stream) if stream else service.default_quota
            service.set_quota(_quota_from(data, base), stream)
            return {"ok": True}
        if path == "streams":
            quota = data.get("quota")
            quota_obj = _quota_from(quota, service.default_quota) if quota else None
            extension = data.get("file_extension")
            config = None if extension is None else {
                "ExtendedS3DestinationConfiguration": {"FileExtension": extension}
            }
            return {"DeliveryStreamARN": service.create_stream(str(data["name"]), quota_obj,
                                                               config)}
        if path == "flush":
            service.delivery.flush()
            return {
                "files": {
                    name: [str(p) for p in service.delivery.files(name)]
                    for name in service.stream_names()
                }
            }
        return None


class EmulatorControl:
    """Client of the control API of an emulator at ``endpoint_url`` (e.g. in a subprocess).

    For an ``https://`` endpoint (an emulator run with ``--tls``), ``ca_file`` is the CA
    certificate it printed; without one the system's trusted CAs are used.
    """

    def __init__(self, endpoint_url: str, timeout: float = 10.0,
                 ca_file: str | None = None) -> None:
        parts = urlsplit(endpoint_url)
        self._host = parts.hostname or "127.0.0.1"
        self._tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._tls = ssl.create_default_context(cafile=ca_file)
        self._port = parts.port or (443 if self._tls else 80)
        self._timeout = timeout

    def _call(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout) \
            if self._tls is None else http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._tls)
        try:
            body = orjson.dumps(payload) if payload is not None else None
            conn.request(method, "/_emulator/" + path, body=body,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = orjson.loads(response.read() or b"{}")
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"emulator control {method} {path}: {response.status} {data}")
        return data

    def health(self) -> bool:
        return bool(self._call("GET", "health")["ok"])

    def stats(self, stream: str | None = None) -> Stats:
        if stream is None:
            data = self._call("GET", "stats")
            data.pop("streams", None)
        else:
            data = self._call("GET", f"stats?stream={quote(stream)}")
        return Stats.from_json(data)

    def script(self, *faults: Fault) -> None:
        self._call("POST", "faults", {"script": [f.to_json() for f in faults]})

    def clear_faults(self) -> None:
        """Drop scripted faults and set every random rate to 0."""
        self._call("POST", "faults", {"clear": True, "rates": FaultRates().to_json()})

    def set_fault_rates(self, rates: FaultRates, seed: int | None = None) -> None:
        self._call("POST", "faults", {"rates": rates.to_json(), "seed": seed})

    def set_quota(self, quota: Quota, stream: str | None = None) -> None:
        self._call("POST", "quota", {
            "stream": stream,
            "requests_per_second": quota.requests_per_second,
            "bytes_per_second": quota.bytes_per_second,
            "records_per_second": quota.records_per_second,
        })

    def create_stream(
        self, name: str, quota: Quota | None = None, *, file_extension: str | None = None
    ) -> str:
        quota_json = None if quota is None else {
            "requests_per_second": quota.requests_per_second,
            "bytes_per_second": quota.bytes_per_second,
            "records_per_second": quota.records_per_second,
        }
        return str(self._call("POST", "streams", {
            "name": name, "quota": quota_json, "file_extension": file_extension,
        })["DeliveryStreamARN"])

    def flush(self) -> dict[str, list[Path]]:
        """Write pending records; returns every stream's files in the order written."""
        files = self._call("POST", "flush", {})["files"]
        return {name: [Path(p) for p in paths] for name, paths in files.items()}

    def files(self, stream: str) -> list[Path]:
        return [Path(p) for p in self._call("GET", f"files?stream={quote(stream)}")["files"]]
