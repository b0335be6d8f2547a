"""BufferConfig: validation, derived values, from_env, frozen."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from firehose_buffer import BufferConfig, ConfigurationError, FirehoseBufferError, Quota
from firehose_buffer._service.firehose import FIREHOSE
from firehose_buffer.config import ENV_PREFIX, sharded_stream_names

MAX_BATCH_BYTES = FIREHOSE.max_batch_bytes
MAX_BATCH_RECORDS = FIREHOSE.max_batch_records
MAX_RECORD_BYTES = FIREHOSE.max_record_bytes




def _noop(*args: object) -> None:
    return None


@pytest.mark.parametrize("kwargs", [
    {"streams": ()},
    {"streams": "one-stream-as-a-string"},
    {"streams": ("ok", "bad name")},
    {"streams": ("x" * 65,)},
    {"streams": ("a", "a")},
    {"streams": ("a", 3)},
    {"streams": ("a",), "partition_key": "k", "router": _noop},
    {"streams": ("a",), "partition_key": 5},
    {"streams": ("a",), "router": "not callable"},
    {"streams": ("a",), "on_failure": 1},
    {"streams": ("a",), "on_full": "wait"},
    {"streams": ("a",), "quota": 1000},
    {"streams": ("a",), "max_record_bytes": 0},
    {"streams": ("a",), "max_record_bytes": MAX_RECORD_BYTES + 1},
    {"streams": ("a",), "max_record_bytes": 1.5},
    {"streams": ("a",), "max_record_bytes": True},
    {"streams": ("a",), "max_events_per_record": 0},
    {"streams": ("a",), "max_batch_records": MAX_BATCH_RECORDS + 1},
    {"streams": ("a",), "max_batch_bytes": MAX_BATCH_BYTES + 1},
    {"streams": ("a",), "max_batch_bytes": 1000},
    {"streams": ("a",), "max_buffer_bytes": 1000},
    {"streams": ("a",), "max_concurrent_requests": 0},
    {"streams": ("a",), "linger_seconds": 0},
    {"streams": ("a",), "linger_seconds": -1.0},
    {"streams": ("a",), "linger_seconds": float("nan")},
    {"streams": ("a",), "record_ttl_seconds": float("inf")},
    {"streams": ("a",), "quota_share": 0},
    {"streams": ("a",), "quota_share": 1.5},
    {"streams": ("a",), "max_block_seconds": -0.1},
    {"streams": ("a",), "exit_timeout_seconds": "5"},
    {"streams": ("a",), "retry_initial_backoff_seconds": 2.0, "retry_max_backoff_seconds": 1.0},
])
def test_invalid_values_raise_configuration_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        BufferConfig(**kwargs)
    assert isinstance(info.value, FirehoseBufferError)
    assert isinstance(info.value, ValueError)


def test_zero_is_allowed_where_it_means_do_not_wait() -> None:
    config = BufferConfig(
        streams=["a"],  # type: ignore[arg-type]  # any sequence works at run time
        max_block_seconds=0, exit_timeout_seconds=0,
    )
    assert config.streams == ("a",)


def test_config_is_frozen() -> None:
    config = BufferConfig(streams=("a",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.linger_seconds = 5.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.streams = ("b",)  # type: ignore[misc]


def test_derived_targets_keep_half_a_second_of_the_byte_quota() -> None:
    standard = BufferConfig(streams=("a", "b"))
    assert standard.batch_target_bytes == Quota.STANDARD.bytes_per_second // 2
    assert standard.record_target_bytes == min(MAX_RECORD_BYTES, standard.batch_target_bytes)
    assert standard.concurrency == 2
    shared = BufferConfig(streams=("a",), quota=Quota.HIGH, quota_share=0.1)
    assert shared.batch_target_bytes == int(Quota.HIGH.bytes_per_second * 0.1 / 2)
    many = BufferConfig(streams=tuple(f"s{i}" for i in range(40)))
    assert many.concurrency == 16
    capped = BufferConfig(streams=("a", "b"), max_concurrent_requests=8)
    assert capped.concurrency == 2


def test_from_env_streams_list() -> None:
    config = BufferConfig.from_env({f"{ENV_PREFIX}STREAMS": " a, b ,c,"})
    assert config.streams == ("a", "b", "c")


def test_from_env_stream_with_shards() -> None:
    env = {f"{ENV_PREFIX}STREAM": "events", f"{ENV_PREFIX}SHARDS": "3"}
    assert BufferConfig.from_env(env).streams == ("events-0", "events-1", "events-2")
    assert BufferConfig.from_env({f"{ENV_PREFIX}STREAM": "events"}).streams == ("events",)
    assert sharded_stream_names("x", 2) == ("x-0", "x-1")


@pytest.mark.parametrize("env", [
    {},
    {f"{ENV_PREFIX}STREAMS": "a", f"{ENV_PREFIX}STREAM": "b"},
    {f"{ENV_PREFIX}STREAM": "b", f"{ENV_PREFIX}SHARDS": "0"},
    {f"{ENV_PREFIX}STREAM": "b", f"{ENV_PREFIX}SHARDS": "two"},
    {f"{ENV_PREFIX}STREAMS": "a", f"{ENV_PREFIX}LINGER_SECONDS": "soon"},
    {f"{ENV_PREFIX}STREAMS": "a", f"{ENV_PREFIX}LINGER_SECONDS": "-1"},
    {f"{ENV_PREFIX}STREAMS": "a", f"{ENV_PREFIX}QUOTA": "huge"},
    {f"{ENV_PREFIX}STREAMS": "a", f"{ENV_PREFIX}BYTES_PER_SECOND": "0"},
    {f"{ENV_PREFIX}STREAMS": "a", f"{ENV_PREFIX}ON_FULL": "explode"},
])
def test_from_env_rejects_bad_values(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        BufferConfig.from_env(env)


def _numeric_fields() -> list[dataclasses.Field[Any]]:
    return [
        f for f in dataclasses.fields(BufferConfig)
        if f.init and str(f.type).split(" ")[0] in ("int", "float")
    ]


@pytest.mark.parametrize("f", _numeric_fields(), ids=lambda f: f.name)
def test_from_env_reads_every_numeric_field(f: dataclasses.Field[Any]) -> None:
    default = BufferConfig(streams=("a",))
    current = getattr(default, f.name)
    # A value different from the default that is still valid with every other default.
    if isinstance(current, float) and f.name != "quota_share":
        value: int | float = current * 2 + 0.5
    elif f.name == "quota_share":
        value = 0.25
    elif f.name == "max_concurrent_requests":
        value = 3
    elif f.name in ("max_record_bytes", "max_batch_records", "max_batch_bytes"):
        value = current - 1000 if current > 1000 else current - 1
    else:
        value = current + 7 if current is not None else 3
    text = f"{value:_}" if isinstance(value, int) else repr(value)
    env = {f"{ENV_PREFIX}STREAMS": "a", f"{ENV_PREFIX}{f.name.upper()}": text}
    if f.name == "compression_level":
        env[f"{ENV_PREFIX}COMPRESSION"] = "gzip"  # a level needs a codec
    config = BufferConfig.from_env(env)
    assert getattr(config, f.name) == value
    assert type(getattr(config, f.name)) is type(value)


def test_from_env_every_numeric_field_was_tested() -> None:
    names = {f.name for f in _numeric_fields()}
    assert {"linger_seconds", "max_record_bytes", "max_events_per_record", "quota_share",
            "max_buffer_bytes", "max_concurrent_requests", "read_timeout_seconds"} <= names


def test_from_env_quota_preset_and_overrides() -> None:
    base = {f"{ENV_PREFIX}STREAMS": "a"}
    assert BufferConfig.from_env(base).quota == Quota.STANDARD
    assert BufferConfig.from_env({**base, f"{ENV_PREFIX}QUOTA": " HIGH "}).quota == Quota.HIGH
    custom = BufferConfig.from_env({
        **base, f"{ENV_PREFIX}QUOTA": "high", f"{ENV_PREFIX}BYTES_PER_SECOND": "2097152",
    }).quota
    assert custom == Quota(Quota.HIGH.requests_per_second, 2097152.0,
                           Quota.HIGH.records_per_second)
    only = BufferConfig.from_env({**base, f"{ENV_PREFIX}REQUESTS_PER_SECOND": "10"}).quota
    assert only == Quota(10.0, Quota.STANDARD.bytes_per_second, Quota.STANDARD.records_per_second)


def test_from_env_strings_and_overrides() -> None:
    config = BufferConfig.from_env(
        {f"{ENV_PREFIX}STREAMS": "a", f"{ENV_PREFIX}PARTITION_KEY": "user",
         f"{ENV_PREFIX}ON_FULL": "drop", f"{ENV_PREFIX}ENDPOINT_URL": "http://127.0.0.1:1",
         f"{ENV_PREFIX}REGION": "eu-central-1", f"{ENV_PREFIX}LINGER_SECONDS": " "},
        linger_seconds=0.25,
    )
    assert config.partition_key == "user"
    assert config.on_full == "drop"
    assert config.endpoint_url == "http://127.0.0.1:1"
    assert config.region == "eu-central-1"
    assert config.linger_seconds == 0.25
    assert BufferConfig.from_env({}, streams=("z",)).streams == ("z",)
