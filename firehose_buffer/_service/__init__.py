"""What the service is: limits, billing, wire format and the meaning of its answers."""

from .firehose import FIREHOSE, ServiceProfile

__all__ = ["FIREHOSE", "ServiceProfile"]
