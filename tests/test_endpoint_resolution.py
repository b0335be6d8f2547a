"""The lean transport finds the endpoint botocore would, without building a botocore client
in the common case (a plain region), and by asking botocore in every other case."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import botocore.session
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firehose_buffer import BufferConfig
from firehose_buffer.errors import ConfigurationError
from firehose_buffer.transport.lean import LeanTransport

_PARTITIONS = botocore.session.Session().get_component("data_loader").load_data("partitions")
KNOWN_REGIONS = sorted(r for p in _PARTITIONS["partitions"] for r in p["regions"])
_PREFIXES = ["us", "eu", "ap", "cn", "us-gov", "us-iso", "us-isob", "eu-isoe", "us-isof",
             "eusc-de", "xx", "aws"]
made_up = st.builds(lambda p, m, n: f"{p}-{m}-{n}", st.sampled_from(_PREFIXES),
                    st.sampled_from(["east", "west", "central", "north", "southeast", "x_y"]),
                    st.integers(0, 12))
odd = st.sampled_from(["US-EAST-1", "us-east-1.evil", "us-east-1\n", "-us-east-1", "global"])

CONFIG_FILES = {
    "none": None,
    "plain": "[default]\nregion = eu-west-1\n",
    "profile endpoint_url": "[default]\nendpoint_url = http://127.0.0.1:4566\n",
    "services section": ("[default]\nservices = local\n\n[services local]\nfirehose =\n"
                         "  endpoint_url = http://127.0.0.1:4567\n"),
    "fips in config": "[default]\nuse_fips_endpoint = true\n",
}
ENVIRONMENTS: dict[str, dict[str, str]] = {
    "plain": {},
    "fips": {"AWS_USE_FIPS_ENDPOINT": "true"},
    "dual stack": {"AWS_USE_DUALSTACK_ENDPOINT": "true"},
    "fips and dual stack": {"AWS_USE_FIPS_ENDPOINT": "true", "AWS_USE_DUALSTACK_ENDPOINT": "true"},
    "service endpoint": {"AWS_ENDPOINT_URL_FIREHOSE": "http://127.0.0.1:4568"},
    "global endpoint": {"AWS_ENDPOINT_URL": "http://127.0.0.1:4569"},
    "other service endpoint": {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:4570"},
}


@contextmanager
def environment(tmp: Path, env: dict[str, str], config_file: str | None) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith(("AWS_ENDPOINT_URL", "AWS_USE_"))]:
            del os.environ[key]
        os.environ.update(env)
        path = tmp / "config"
        path.write_text(config_file or "")
        os.environ["AWS_CONFIG_FILE"] = str(path)
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "no-credentials")
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def botocore_answer(region: str) -> str:
    """What a boto3/botocore client for firehose in ``region`` would call, or its error."""
    try:
        client = botocore.session.Session().create_client("firehose", region_name=region)
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return str(client.meta.endpoint_url)


def lean_answer(region: str) -> str:
    try:
        transport = LeanTransport(BufferConfig(streams=("s",), region=region))
    except ConfigurationError:
        return "error"
    return transport.endpoint_url


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(region=st.one_of(st.sampled_from(KNOWN_REGIONS), made_up, odd),
       env=st.sampled_from(sorted(ENVIRONMENTS)), config_file=st.sampled_from(sorted(CONFIG_FILES)))
def test_lean_endpoint_is_botocores(tmp_path: Path, region: str, env: str,
                                    config_file: str) -> None:
    with environment(tmp_path, ENVIRONMENTS[env], CONFIG_FILES[config_file]):
        expected = botocore_answer(region)
        got = lean_answer(region)
    if expected.startswith("error"):
        assert got == "error"
    else:
        assert got == expected


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1", "cn-north-1", "us-gov-west-1"])
def test_plain_region_builds_no_botocore_client(tmp_path: Path, region: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The cold-start saving: no client (no service model loaded) for a plain region."""
    def no_client(*args: object, **kwargs: object) -> None:
        raise AssertionError("a botocore client was built")

    monkeypatch.setattr(botocore.session.Session, "create_client", no_client)
    with environment(tmp_path, {}, None):
        transport = LeanTransport(BufferConfig(streams=("s",), region=region))
    assert transport.endpoint_url.startswith(f"https://firehose.{region}.amazonaws.com")
