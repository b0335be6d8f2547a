"""The value every transport returns (see :class:`Outcome`); what answers mean is decided by
the service profile, :mod:`firehose_buffer._service.firehose`, for both transports."""

from .._service.outcome import Outcome

__all__ = ["Outcome"]
