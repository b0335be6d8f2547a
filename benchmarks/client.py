"""The boto3 client a buffer makes for itself when it is not given one."""

from __future__ import annotations

from typing import cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from firehose_buffer.config import BufferConfig
from firehose_buffer.errors import ConfigurationError
from firehose_buffer.transport import FirehoseClient

from . import fastbody


def make_client(config: BufferConfig) -> FirehoseClient:
    """A Firehose client whose retries are the buffer's business, not botocore's.

    botocore would resend a whole batch on a 5xx without telling us; the buffer must know, to
    count possible duplicates and to slow down. Region and endpoint come from the config or,
    when unset there, from the usual AWS environment and config files.
    """
    botocore_config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=config.connect_timeout_seconds,
        read_timeout=config.read_timeout_seconds,
        max_pool_connections=config.concurrency + 2,
        tcp_keepalive=True,
    )
    try:
        # A session of its own: boto3's default session is not safe to share across threads.
        session = boto3.session.Session()
        client = session.client(
            "firehose",
            region_name=config.region,
            endpoint_url=config.endpoint_url,
            config=botocore_config,
        )
    except BotoCoreError as exc:
        raise ConfigurationError(
            f"cannot create a Firehose client: {exc} (set region/endpoint_url in the config, "
            "or AWS_REGION / AWS_ENDPOINT_URL_FIREHOSE in the environment)"
        ) from exc
    fastbody.install(client)
    return cast(FirehoseClient, client)
