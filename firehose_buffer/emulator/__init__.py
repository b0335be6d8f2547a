"""A local Amazon Data Firehose for tests and benchmarks: ``LocalFirehose``.

A real HTTP/1.1 server on 127.0.0.1 speaking Firehose's JSON 1.1 protocol as botocore and
the AWS CLI send it (``CreateDeliveryStream``, ``DescribeDeliveryStream``,
``ListDeliveryStreams``, ``DeleteDeliveryStream``, ``PutRecord``, ``PutRecordBatch``), with
the service's hard limits and error codes, per-stream quotas, injectable faults, and delivery
of accepted records to files laid out like Firehose's S3 objects.

Quota model (see :mod:`.throttle`): per stream, three token buckets (requests, records,
bytes), each holding one second of its rate, refilled continuously from a monotonic clock
and starting full. A put call takes one request token or fails whole with HTTP 503
``ServiceUnavailableException`` "Slow down."; then records, in order, each take one record
token and ``len(Data)`` byte tokens, or fail alone inside the HTTP 200 with
``ServiceUnavailableException`` "Slow down." while consuming nothing, so later records still
get their chance. Quota refusals are counted apart from injected faults (:class:`Stats`).

Faults (see :mod:`.faults`): scripted (:meth:`LocalFirehose.script` with :class:`Fault`
values) or random with a seed (:class:`FaultRates`).

Delivery (see :mod:`.delivery`): ``<data_dir>/<stream>/YYYY/MM/DD/HH/<stream>-1-...``, ended by
the stream's ``FileExtension``; :meth:`LocalFirehose.delivered_lines` decodes zstd and gzip
objects (compressed records) whole.

HTTPS (see :mod:`.tls`): ``LocalFirehose(tls=True)`` or ``--tls`` serve a certificate from a
throwaway CA made at start, whose file is :attr:`LocalFirehose.ca_file` (the ``emulator-tls``
extra).

Three ways to run it: in-process (``with LocalFirehose(...) as fh``), as a process
(``python -m firehose_buffer.emulator --port 0``, see :mod:`.cli`, driven remotely through
:class:`EmulatorControl`, see :mod:`.control`), and as the pytest fixture
``local_firehose`` (``local_firehose_tls`` over HTTPS; :mod:`.pytest_plugin`).
"""

from .control import EmulatorControl
from .faults import Fault, FaultKind, FaultRates
from .server import LocalFirehose
from .stats import Stats

__all__ = ["EmulatorControl", "Fault", "FaultKind", "FaultRates", "LocalFirehose", "Stats"]
