"""TLS end to end on 127.0.0.1: the lean transport (and a boto3 client, where the contract is
shared) against the emulator over HTTPS and a hostile HTTPS server.

Trust comes from where botocore takes it (``AWS_CA_BUNDLE``, ``ca_bundle`` in the AWS config
file); a certificate the client cannot verify fails the call at once, counted and reported
with a reason that names it, and the events reach the stream once the setup is fixed.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import orjson
import pytest
import trustme
from botocore.config import Config
from hostile_server import Answer, Behaviour, HostileFirehose
from trickle_relay import TrickleRelay

from firehose_buffer import BufferConfig, FirehoseBuffer
from firehose_buffer.emulator import Fault, LocalFirehose
from firehose_buffer.transport import BotocoreTransport, Outcome, Transport
from firehose_buffer.transport.lean import LeanTransport

STREAM = "s"
RECORDS = [b'{"a":1}\n', memoryview(b'{"b":2}\n'), b"x" * 3000 + b"\n"]
CALL_TIMEOUT = 1.0
NOT_VERIFIED = Outcome(error="SSLCertVerificationError")


# -- certificates and servers -------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A CA of this module's own, for the hostile server's certificates."""
    return trustme.CA()


def ca_path(ca: trustme.CA, directory: Path) -> str:
    path = directory / f"ca-{id(ca)}.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture
def emulator() -> Iterator[LocalFirehose]:
    with LocalFirehose(streams=[STREAM], keep_records=True, tls=True) as fh:
        yield fh


@pytest.fixture
def trusted(emulator: LocalFirehose, monkeypatch: pytest.MonkeyPatch) -> LocalFirehose:
    """The TLS emulator, its CA trusted through AWS_CA_BUNDLE."""
    assert emulator.ca_file is not None
    monkeypatch.setenv("AWS_CA_BUNDLE", emulator.ca_file)
    return emulator


@pytest.fixture(autouse=True)
def no_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)


def config_for(endpoint: str, **extra: Any) -> BufferConfig:
    values: dict[str, Any] = dict(
        streams=(STREAM,), endpoint_url=endpoint, region="us-east-1",
        connect_timeout_seconds=1.0, read_timeout_seconds=5.0,
        call_timeout_seconds=CALL_TIMEOUT)
    values.update(extra)
    return BufferConfig(**values)


def lean(endpoint: str, **extra: Any) -> LeanTransport:
    """Built as the buffer builds it: a fresh botocore session reads the environment."""
    return LeanTransport(config_for(endpoint, **extra), session=botocore.session.Session())


def boto(endpoint: str, **extra: Any) -> Transport:
    """A boto3 client the user passes; it reads AWS_CA_BUNDLE and the config file itself."""
    return BotocoreTransport(boto3.session.Session().client(
        "firehose", endpoint_url=endpoint, region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=5),
        **extra))


MAKERS: dict[str, Callable[..., Transport]] = {"lean": lean, "botocore": boto}


@pytest.fixture(params=list(MAKERS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _plain(outcome: Outcome) -> tuple[Any, ...]:
    codes = None if outcome.codes is None else list(outcome.codes)
    return (codes, outcome.error, outcome.retryable, outcome.unknown, outcome.throttled)


def _send(transport: Transport, records: list[Any] | None = None) -> Outcome:
    try:
        return transport.send(STREAM, records or RECORDS)
    finally:
        transport.close()


# -- verified -----------------------------------------------------------------------------


def test_verified_through_aws_ca_bundle(trusted: LocalFirehose, kind: str) -> None:
    outcome = _send(MAKERS[kind](trusted.endpoint_url))
    assert outcome.codes == [None, None, None]
    assert trusted.accepted_records(STREAM) == [bytes(r) for r in RECORDS]


def test_verified_through_ca_bundle_in_the_aws_config_file(
        emulator: LocalFirehose, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config_file = tmp_path / "config"
    config_file.write_text(f"[profile tls]\nca_bundle = {emulator.ca_file}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("AWS_PROFILE", "tls")
    assert _send(MAKERS[kind](emulator.endpoint_url)).codes == [None, None, None]
    assert len(emulator.accepted_records(STREAM)) == 3


def test_aws_ca_bundle_wins_over_the_config_file_as_in_botocore(
        emulator: LocalFirehose, kind: str, ca: trustme.CA, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
) -> None:
    config_file = tmp_path / "config"
    config_file.write_text(f"[default]\nca_bundle = {ca_path(ca, tmp_path)}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    assert _plain(_send(MAKERS[kind](emulator.endpoint_url))) == _plain(NOT_VERIFIED)
    assert emulator.ca_file is not None
    monkeypatch.setenv("AWS_CA_BUNDLE", emulator.ca_file)
    assert _send(MAKERS[kind](emulator.endpoint_url)).codes == [None, None, None]


def test_a_ca_bundle_that_cannot_be_read_is_a_configuration_error(
        emulator: LocalFirehose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from firehose_buffer import ConfigurationError  # noqa: PLC0415

    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigurationError, match=r"missing\.pem"):
        lean(emulator.endpoint_url)


# -- refused ------------------------------------------------------------------------------


def test_unknown_ca_is_refused_at_once_and_nothing_is_sent(
        emulator: LocalFirehose, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="firehose_buffer")
    outcome = _send(MAKERS[kind](emulator.endpoint_url))
    # Not retryable (the trust settings are read once; resending meets the same refusal),
    # and not a possible duplicate: the request never left.
    assert _plain(outcome) == _plain(NOT_VERIFIED)
    assert emulator.stats().requests == 0
    if kind == "lean":
        assert "unable to get local issuer certificate" in caplog.text
        assert "AWS_CA_BUNDLE" in caplog.text


def test_certificate_for_another_host_is_refused(
        ca: trustme.CA, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="firehose_buffer")
    monkeypatch.setenv("AWS_CA_BUNDLE", ca_path(ca, tmp_path))
    with HostileFirehose(tls=server_context(ca, "firehose.example.com")) as server:
        outcome = _send(MAKERS[kind](server.endpoint_url))
        assert _plain(outcome) == _plain(NOT_VERIFIED)
        assert server.all_calls() == []
    if kind == "lean":
        assert "mismatch" in caplog.text.lower()


def _buffer_config(endpoint: str, **extra: Any) -> BufferConfig:
    return config_for(endpoint, linger_seconds=0.05, retry_initial_backoff_seconds=0.05,
                      retry_max_backoff_seconds=0.2, **extra)


def _events(count: int, run: str = "a") -> list[dict[str, Any]]:
    return [{"run": run, "seq": i, "pad": "p" * 200} for i in range(count)]


def test_buffer_fails_events_naming_the_certificate_problem(emulator: LocalFirehose) -> None:
    reported: list[tuple[int, str]] = []
    config = _buffer_config(emulator.endpoint_url,
                            on_failure=lambda events, reason: reported.append(
                                (len(events), reason)))
    started = time.monotonic()
    with FirehoseBuffer(config) as buf:
        for event in _events(40):
            buf.put(event)
        result = buf.flush(timeout=5.0)
        stats = buf.stats()
    assert time.monotonic() - started < 5.0
    assert (result.delivered, result.failed, result.pending) == (0, 40, 0)
    assert stats.failures_by_reason == {"SSLCertVerificationError": 40}
    assert stats.possible_duplicates == 0
    assert stats.last_error is not None and "SSLCertVerificationError" in stats.last_error
    assert sum(n for n, _ in reported) == 40
    assert {reason for _, reason in reported} == {"SSLCertVerificationError"}
    assert emulator.stats().requests == 0


def test_events_refused_for_their_certificate_are_delivered_after_the_fix(
        emulator: LocalFirehose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = tmp_path / "spool"
    events = _events(30, run="fixed")
    with FirehoseBuffer(_buffer_config(emulator.endpoint_url, spool_dir=str(spool))) as buf:
        for event in events:
            buf.put(event)
        assert buf.flush(timeout=5.0).failed == 30
        assert buf.stats().events_spooled == 30
    # The fix: trust the CA that signed the endpoint's certificate, then start again.
    assert emulator.ca_file is not None
    monkeypatch.setenv("AWS_CA_BUNDLE", emulator.ca_file)
    with FirehoseBuffer(_buffer_config(emulator.endpoint_url, spool_dir=str(spool))) as buf:
        buf.flush(timeout=5.0)
        buf.close(timeout=5.0)
        assert buf.stats().events_replayed == 30
    delivered = [orjson.loads(line) for line in emulator.delivered_lines(STREAM)]
    assert sorted(delivered, key=lambda e: e["seq"]) == events


# -- connections ----------------------------------------------------------------------------


def test_one_tls_connection_is_kept_alive_and_a_reset_opens_another(
        ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", ca_path(ca, tmp_path))
    with HostileFirehose(tls=server_context(ca, "127.0.0.1")) as server:
        transport = lean(server.endpoint_url)
        try:
            for _ in range(5):
                assert transport.send(STREAM, RECORDS).codes == [None] * 3
            assert len({c.peer for c in server.all_calls()}) == 1  # one handshake for five
            server.script(Answer(Behaviour.RESET))  # stored, then a RST instead of the answer
            outcome = transport.send(STREAM, RECORDS)
            assert _plain(outcome) == (None, "ConnectionClosedError", True, True, False)
            assert transport.send(STREAM, RECORDS).codes == [None] * 3
            assert transport.send(STREAM, RECORDS).codes == [None] * 3
        finally:
            transport.close()
        peers = [c.peer for c in server.all_calls()]
        assert len(peers) == 8
        assert len(set(peers)) == 2  # the reset connection was dropped, its successor kept
        assert len(server.lines(STREAM)) == 8 * 3


def test_reset_over_tls_is_a_possible_duplicate_and_retried(trusted: LocalFirehose) -> None:
    trusted.script(Fault.reset_after_store())
    events = _events(25, run="reset")
    with FirehoseBuffer(_buffer_config(trusted.endpoint_url)) as buf:
        for event in events:
            buf.put(event)
        result = buf.flush(timeout=5.0)
        stats = buf.stats()
    assert (result.delivered, result.failed) == (25, 0)
    assert trusted.stats().faults == {"reset_after_store": 1}
    delivered = [orjson.loads(line) for line in trusted.delivered_lines(STREAM)]
    duplicated = len(delivered) - len(events)
    assert duplicated > 0  # the reset call had stored its records: the resend repeats them
    assert stats.possible_duplicates >= duplicated
    assert {e["seq"] for e in delivered} == {e["seq"] for e in events}


def test_a_trickling_tls_answer_is_cut_at_the_deadline(
        ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", ca_path(ca, tmp_path))
    with HostileFirehose(tls=server_context(ca, "127.0.0.1"), trickle_interval=0.2) as server:
        transport = lean(server.endpoint_url)
        try:
            assert transport.send(STREAM, RECORDS).codes == [None] * 3
            server.script(Answer(Behaviour.TRICKLE))
            started = time.monotonic()
            outcome = transport.send(STREAM, RECORDS)
            elapsed = time.monotonic() - started
            # A byte every 0.2 s never trips the 5 s read timeout; the deadline ends it.
            assert _plain(outcome) == (None, "CallTimeout", True, True, False)
            assert elapsed < CALL_TIMEOUT + 1.0
            assert transport.send(STREAM, RECORDS).codes == [None] * 3
        finally:
            transport.close()
        assert len({c.peer for c in server.all_calls()}) == 2


def test_a_trickling_tls_handshake_is_cut_at_the_deadline(trusted: LocalFirehose) -> None:
    relay = TrickleRelay(trusted.port)
    try:
        transport = lean(f"https://127.0.0.1:{relay.port}", connect_timeout_seconds=5.0)
        started = time.monotonic()
        outcome = _send(transport)
        elapsed = time.monotonic() - started
    finally:
        relay.close()
    assert _plain(outcome) == (None, "CallTimeout", True, False, False)  # nothing was sent
    assert elapsed < CALL_TIMEOUT + 1.0
    assert trusted.stats().requests == 0


def test_a_slow_tunnel_then_a_trickling_handshake_end_at_the_deadline(
        trusted: LocalFirehose) -> None:
    """A proxy that takes most of the deadline to open the tunnel, then a handshake that
    trickles through it. CPython bounds a whole handshake by the socket's timeout, but that
    was set before the tunnel took its time; only the watchdog can end the handshake at the
    deadline, so it must see the TLS socket while it shakes hands (with http.client's
    HTTPSConnection it cannot: the wrap detaches the socket it holds)."""
    call_timeout = 2.0
    relay = TrickleRelay(trusted.port, proxy_delay=0.8 * call_timeout)
    try:
        transport = lean(trusted.endpoint_url, call_timeout_seconds=call_timeout,
                         connect_timeout_seconds=10.0,
                         proxies={"https": f"http://127.0.0.1:{relay.port}"})
        started = time.monotonic()
        outcome = _send(transport)
        elapsed = time.monotonic() - started
    finally:
        relay.close()
    assert relay.tunnels == 1
    assert _plain(outcome) == (None, "CallTimeout", True, False, False)
    # Without the cut it would end at the proxy's delay plus a whole socket timeout.
    assert elapsed < call_timeout + 0.5 * (0.8 * call_timeout)


# -- a boto3 client the user passes -----------------------------------------------------------


def test_buffer_with_a_boto3_client_over_tls(emulator: LocalFirehose) -> None:
    client = emulator.client(config=Config(retries={"total_max_attempts": 1}))  # verify=CA
    events = _events(20, run="boto3")
    with FirehoseBuffer(_buffer_config(emulator.endpoint_url), client=client) as buf:
        for event in events:
            buf.put(event)
        assert buf.flush(timeout=5.0).delivered == 20
    delivered = [orjson.loads(line) for line in emulator.delivered_lines(STREAM)]
    assert delivered == events


def test_tls_calls_from_many_threads_share_the_pool(trusted: LocalFirehose) -> None:
    transport = lean(trusted.endpoint_url, max_concurrent_requests=1)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            outcome = transport.send(STREAM, RECORDS)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    transport.close()
    assert [o.codes for o in outcomes] == [[None] * 3] * 20
    assert len(trusted.accepted_records(STREAM)) == 60
