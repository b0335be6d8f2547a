"""Proxies, through a real proxy process on 127.0.0.1 (``tests/connect_proxy.py``) that
requires credentials and counts what it does: HTTPS to the emulator through a CONNECT tunnel,
plain HTTP forwarded, ``NO_PROXY``, the ``proxies`` setting, wrong credentials, a dead proxy
and a silent one. Where both transports share the contract, a boto3 client gets the same
outcome through the same proxy (which also shows the test proxy acts like a real one).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import botocore.session
import orjson
import pytest
from botocore.config import Config

from firehose_buffer import BufferConfig, ConfigurationError, FirehoseBuffer
from firehose_buffer.emulator import Fault, LocalFirehose
from firehose_buffer.transport import BotocoreTransport, Outcome, Transport
from firehose_buffer.transport.lean import LeanTransport

HERE = Path(__file__).resolve().parent
STREAM = "s"
RECORDS = [b'{"a":1}\n', b'{"b":2}\n', b"x" * 3000 + b"\n"]
USER, PASSWORD = "firehose", "p@ss:w/rd"  # characters a URL must percent-encode
CALL_TIMEOUT = 1.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                   "no_proxy", "ALL_PROXY", "all_proxy")


class ProxyProcess:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "connect_proxy.py"), *args],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on http://"), line
        self.url = line.removeprefix("listening on ")
        self.port = int(self.url.rsplit(":", 1)[1])

    def url_with(self, user: str, password: str) -> str:
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        # Straight to the proxy, whatever the environment says about proxies.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}/_proxy/stats", timeout=5) as answer:
            counts: dict[str, int] = json.loads(answer.read())
        return counts

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyProcess]:
    process = ProxyProcess("--user", USER, "--password", PASSWORD)
    try:
        yield process
    finally:
        process.stop()


class Counts:
    """What the proxy did since the test started."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self._proxy = proxy
        self._start = proxy.stats()

    def __getitem__(self, name: str) -> int:
        return self._proxy.stats()[name] - self._start[name]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARIABLES, "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFirehose]:
    """The emulator over TLS, its CA trusted through AWS_CA_BUNDLE."""
    with LocalFirehose(streams=[STREAM], keep_records=True, tls=True) as fh:
        assert fh.ca_file is not None
        monkeypatch.setenv("AWS_CA_BUNDLE", fh.ca_file)
        yield fh


def config_for(endpoint: str, **extra: Any) -> BufferConfig:
    values: dict[str, Any] = dict(
        streams=(STREAM,), endpoint_url=endpoint, region="us-east-1",
        connect_timeout_seconds=1.0, read_timeout_seconds=5.0,
        call_timeout_seconds=CALL_TIMEOUT, linger_seconds=0.05,
        retry_initial_backoff_seconds=0.05, retry_max_backoff_seconds=0.2)
    values.update(extra)
    return BufferConfig(**values)


def lean(endpoint: str, **extra: Any) -> Transport:
    return LeanTransport(config_for(endpoint, **extra), session=botocore.session.Session())


def boto(endpoint: str) -> Transport:
    return BotocoreTransport(boto3.session.Session().client(
        "firehose", endpoint_url=endpoint, region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=5)))


MAKERS: dict[str, Callable[[str], Transport]] = {"lean": lean, "botocore": boto}


@pytest.fixture(params=list(MAKERS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _send(transport: Transport) -> Outcome:
    try:
        return transport.send(STREAM, RECORDS)
    finally:
        transport.close()


def _plain(outcome: Outcome) -> tuple[Any, ...]:
    codes = None if outcome.codes is None else list(outcome.codes)
    return (codes, outcome.error, outcome.retryable, outcome.unknown, outcome.throttled)


def _events(count: int) -> list[dict[str, Any]]:
    return [{"seq": i, "pad": "p" * 300} for i in range(count)]


# -- through the proxy ----------------------------------------------------------------------


def test_https_goes_through_a_tunnel_with_credentials(
        proxy: ProxyProcess, emulator: LocalFirehose, kind: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(USER, PASSWORD))
    counts = Counts(proxy)
    assert _send(MAKERS[kind](emulator.endpoint_url)).codes == [None] * 3
    assert emulator.accepted_records(STREAM) == RECORDS
    assert counts["tunnels"] == 1
    assert counts["bytes_up"] > sum(map(len, RECORDS))  # the request went through, encrypted


def test_buffer_delivers_through_the_proxy_on_one_kept_tunnel(
        proxy: ProxyProcess, emulator: LocalFirehose, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", proxy.url_with(USER, PASSWORD))
    counts = Counts(proxy)
    events = _events(200)
    with FirehoseBuffer(config_for(emulator.endpoint_url)) as buf:
        for i, event in enumerate(events):
            buf.put(event)
            if i % 50 == 49:
                assert buf.flush(timeout=5.0)  # several calls
        assert buf.flush(timeout=5.0)
        assert buf.stats().requests_sent >= 4
    delivered = [orjson.loads(line) for line in emulator.delivered_lines(STREAM)]
    assert delivered == events
    assert counts["tunnels"] == 1  # one stream, one pooled connection, one tunnel
    assert counts["bytes_up"] > len(orjson.dumps(events))


def test_a_reset_inside_the_tunnel_is_retried_through_a_new_one(
        proxy: ProxyProcess, emulator: LocalFirehose, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(USER, PASSWORD))
    emulator.script(Fault.reset_after_store())
    counts = Counts(proxy)
    events = _events(20)
    with FirehoseBuffer(config_for(emulator.endpoint_url)) as buf:
        for event in events:
            buf.put(event)
        assert buf.flush(timeout=5.0)
        assert buf.stats().possible_duplicates > 0
    assert {e["seq"] for e in map(orjson.loads, emulator.delivered_lines(STREAM))} == \
        set(range(20))
    assert counts["tunnels"] == 2


@pytest.mark.parametrize("variable", ["NO_PROXY", "no_proxy"])
@pytest.mark.parametrize("value", ["127.0.0.1", "localhost,127.0.0.1", "*"])
def test_no_proxy_bypasses_the_proxy(
        proxy: ProxyProcess, emulator: LocalFirehose, monkeypatch: pytest.MonkeyPatch,
        variable: str, value: str) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(USER, PASSWORD))
    monkeypatch.setenv(variable, value)
    counts = Counts(proxy)
    assert _send(lean(emulator.endpoint_url)).codes == [None] * 3
    assert counts["tunnels"] == 0


def test_no_proxy_naming_another_host_keeps_the_proxy(
        proxy: ProxyProcess, emulator: LocalFirehose, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(USER, PASSWORD))
    monkeypatch.setenv("NO_PROXY", "firehose.example.com,.internal")
    counts = Counts(proxy)
    assert _send(lean(emulator.endpoint_url)).codes == [None] * 3
    assert counts["tunnels"] == 1


def test_plain_http_is_forwarded_through_the_proxy(
        proxy: ProxyProcess, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalFirehose(streams=[STREAM], keep_records=True) as fh:  # checks signatures
        monkeypatch.setenv("HTTP_PROXY", proxy.url_with(USER, PASSWORD))
        counts = Counts(proxy)
        assert _send(MAKERS[kind](fh.endpoint_url)).codes == [None] * 3
        assert fh.accepted_records(STREAM) == RECORDS
    assert counts["forwarded"] == 1
    assert counts["tunnels"] == 0


def test_the_proxies_setting_replaces_the_environment(
        proxy: ProxyProcess, emulator: LocalFirehose, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        dead = f"http://127.0.0.1:{placeholder.getsockname()[1]}"
    monkeypatch.setenv("HTTPS_PROXY", dead)
    counts = Counts(proxy)
    given = {"https": proxy.url_with(USER, PASSWORD)}
    assert _send(lean(emulator.endpoint_url, proxies=given)).codes == [None] * 3
    assert counts["tunnels"] == 1
    # An empty mapping: no proxy at all, whatever the environment says.
    assert _send(lean(emulator.endpoint_url, proxies={})).codes == [None] * 3
    assert counts["tunnels"] == 1
    # The setting is not subject to NO_PROXY, as botocore's Config(proxies=...) is not.
    monkeypatch.setenv("NO_PROXY", "*")
    assert _send(lean(emulator.endpoint_url, proxies=given)).codes == [None] * 3
    assert counts["tunnels"] == 2


# -- refused, dead, silent ------------------------------------------------------------------


def test_wrong_proxy_credentials_fail_at_once_as_407(
        proxy: ProxyProcess, emulator: LocalFirehose, kind: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(USER, "wrong"))
    counts = Counts(proxy)
    outcome = _send(MAKERS[kind](emulator.endpoint_url))
    assert _plain(outcome) == _plain(Outcome(error="ProxyAuthenticationRequired"))
    assert counts["refused"] == 1
    assert emulator.stats().requests == 0


def test_wrong_proxy_credentials_for_plain_http_fail_alike(
        proxy: ProxyProcess, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forwarded, the 407 is the answer to the request itself, not to a CONNECT."""
    with LocalFirehose(streams=[STREAM]) as fh:
        monkeypatch.setenv("HTTP_PROXY", proxy.url_with("nobody", PASSWORD))
        counts = Counts(proxy)
        outcome = _send(MAKERS[kind](fh.endpoint_url))
        assert fh.stats().requests == 0
    assert _plain(outcome) == _plain(Outcome(error="ProxyAuthenticationRequired"))
    assert counts["refused"] == 1


def test_buffer_reports_wrong_proxy_credentials_without_retrying(
        proxy: ProxyProcess, emulator: LocalFirehose, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="firehose_buffer")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(USER, "wrong-secret"))
    counts = Counts(proxy)
    reported: list[str] = []
    config = config_for(emulator.endpoint_url,
                        on_failure=lambda events, reason: reported.extend([reason] * len(events)))
    started = time.monotonic()
    with FirehoseBuffer(config) as buf:
        for event in _events(30):
            buf.put(event)
        result = buf.flush(timeout=5.0)
        stats = buf.stats()
    assert time.monotonic() - started < 5.0
    assert (result.delivered, result.failed) == (0, 30)
    assert stats.failures_by_reason == {"ProxyAuthenticationRequired": 30}
    assert reported == ["ProxyAuthenticationRequired"] * 30
    assert counts["refused"] == stats.requests_sent == 1  # asked once, not again and again
    assert "407" in caplog.text
    assert "wrong-secret" not in caplog.text  # the proxy URL is logged masked


def test_a_dead_proxy_is_a_retryable_connection_error(
        emulator: LocalFirehose, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    outcome = _send(MAKERS[kind](emulator.endpoint_url))
    # Nothing reached Firehose: retried, never a possible duplicate.
    assert _plain(outcome) == _plain(Outcome(error="ProxyConnectionError", retryable=True))


def test_buffer_delivers_once_a_dead_proxy_comes_back(
        emulator: LocalFirehose, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    with FirehoseBuffer(config_for(emulator.endpoint_url)) as buf:
        for event in _events(10):
            buf.put(event)
        assert not buf.flush(timeout=0.5)  # still retrying, nothing lost
        assert buf.stats().failures_by_reason == {}
        assert buf.stats().last_error is not None
        assert "ProxyConnectionError" in buf.stats().last_error
        # The proxy comes up on that port (one without credentials this time).
        revived = ProxyProcess("--port", str(port))
        try:
            assert buf.flush(timeout=5.0)
        finally:
            revived.stop()
    assert len(emulator.delivered_lines(STREAM)) == 10


def test_a_silent_proxy_is_cut_at_the_deadline(
        emulator: LocalFirehose, monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy takes the TCP connection (the kernel does, from the backlog) and never
    answers CONNECT: the call ends at its deadline, not at the longer connect timeout."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{silent.getsockname()[1]}")
        transport = lean(emulator.endpoint_url, connect_timeout_seconds=5.0)
        started = time.monotonic()
        outcome = _send(transport)
        elapsed = time.monotonic() - started
    assert _plain(outcome) == (None, "CallTimeout", True, False, False)
    assert elapsed < CALL_TIMEOUT + 1.0


def test_a_tls_proxy_url_is_a_configuration_error(emulator: LocalFirehose) -> None:
    with pytest.raises(ConfigurationError, match="only http:// proxies"):
        lean(emulator.endpoint_url, proxies={"https": "https://127.0.0.1:3129"})


@pytest.mark.parametrize("bad", ["http://proxy:3128", {"https": 3128}, {1: "http://p:1"}])
def test_the_proxies_setting_is_a_mapping_of_urls(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="HTTPS_PROXY"):
        BufferConfig(streams=(STREAM,), proxies=bad)


def test_the_proxies_setting_is_not_read_from_firehose_buffer_variables() -> None:
    """The environment already has its variables for proxies: the error points to them."""
    with pytest.raises(ConfigurationError, match="HTTPS_PROXY"):
        BufferConfig.from_env({"FIREHOSE_BUFFER_STREAMS": STREAM,
                               "FIREHOSE_BUFFER_PROXIES": "http://proxy:3128"})


def test_a_proxy_url_without_a_scheme_is_http(
        proxy: ProxyProcess, emulator: LocalFirehose, monkeypatch: pytest.MonkeyPatch) -> None:
    url = proxy.url_with(USER, PASSWORD).removeprefix("http://")
    monkeypatch.setenv("HTTPS_PROXY", url)  # botocore reads host:port as http://host:port
    counts = Counts(proxy)
    assert _send(lean(emulator.endpoint_url)).codes == [None] * 3
    assert counts["tunnels"] == 1
