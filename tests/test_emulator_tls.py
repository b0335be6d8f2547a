"""The emulator over HTTPS: in-process, as a process (``--tls``), its control API and fixture,
and the message when the ``emulator-tls`` extra is missing."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import SSLError
from test_emulator_process import NO_RETRIES, REPO, child_env, read_line

from firehose_buffer.emulator import EmulatorControl, LocalFirehose
from firehose_buffer.errors import ConfigurationError


def test_tls_emulator_serves_https_with_a_ca_it_exposes() -> None:
    with LocalFirehose(streams=["s"], tls=True, keep_records=True) as fh:
        assert fh.endpoint_url.startswith("https://127.0.0.1:")
        assert fh.ca_file is not None
        ca_file = Path(fh.ca_file)
        assert ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        answer = fh.client(config=NO_RETRIES).put_record_batch(
            DeliveryStreamName="s", Records=[{"Data": b'{"a":1}\n'}])
        assert answer["FailedPutCount"] == 0
        assert fh.accepted_records("s") == [b'{"a":1}\n']
        # A client that does not trust the throwaway CA is refused by its own TLS check.
        with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            fh.client(config=NO_RETRIES, verify=True).put_record_batch(
                DeliveryStreamName="s", Records=[{"Data": b"x\n"}])
        control = EmulatorControl(fh.endpoint_url, ca_file=fh.ca_file)
        assert control.health()
        assert control.stats("s").records_accepted == 1
        with pytest.raises(ssl.SSLCertVerificationError):
            EmulatorControl(fh.endpoint_url).health()
    assert not ca_file.exists()  # thrown away at stop


def test_plain_emulator_has_no_ca_file() -> None:
    with LocalFirehose() as fh:
        assert fh.ca_file is None
        assert fh.endpoint_url.startswith("http://")


def test_tls_fixture(local_firehose_tls: LocalFirehose) -> None:
    local_firehose_tls.create_stream("s")
    client = local_firehose_tls.client(config=NO_RETRIES)
    client.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b'{"f":1}\n'}])
    assert local_firehose_tls.delivered_lines("s") == [b'{"f":1}']


def test_missing_trustme_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)  # import trustme now raises ImportError
    with pytest.raises(ConfigurationError, match=r"firehose-buffer\[emulator-tls\]"):
        LocalFirehose(tls=True)
    LocalFirehose()  # without TLS nothing needs it


@pytest.mark.slow
def test_tls_process_prints_its_ca_and_serves_https(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firehose_buffer.emulator", "--port", "0", "--tls",
         "--data-dir", str(tmp_path), "--streams", "a"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=REPO,
    )
    try:
        line = read_line(proc, timeout=30)
        # The ready line keeps its shape; the CA comes on the next line.
        assert line.startswith("listening on https://127.0.0.1:")
        endpoint = line.strip().removeprefix("listening on ")
        assert proc.stdout is not None
        ca_line = proc.stdout.readline()
        assert ca_line.startswith("ca file: ")
        ca_file = ca_line.strip().removeprefix("ca file: ")
        control = EmulatorControl(endpoint, ca_file=ca_file)
        assert control.health()
        control.create_stream("b")
        client = boto3.client("firehose", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing",
                              config=NO_RETRIES, verify=ca_file)
        assert client.put_record_batch(DeliveryStreamName="b", Records=[{"Data": b"1\n"}])[
            "FailedPutCount"] == 0
        assert control.stats("b").records_accepted == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not Path(ca_file).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_tls_process_without_trustme_exits_2_naming_the_extra() -> None:
    code = ("import sys; sys.modules['trustme'] = None\n"
            "from firehose_buffer.cli import main\n"
            "sys.exit(main(['emulator', '--tls', '--port', '0']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(), cwd=REPO, timeout=60, check=False)
    assert done.returncode == 2
    assert "firehose-buffer[emulator-tls]" in done.stderr
    assert "Traceback" not in done.stderr
