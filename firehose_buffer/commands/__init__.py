"""The ``send``, ``provision`` and ``status`` subcommands of ``firehose-buffer``.

Each module has ``add_arguments(parser)`` and ``run(args) -> int``; :mod:`..cli` mounts them.
Exit codes: 0 done, 1 some events failed, input was bad or a check failed (status
--record-compression: a stream would break compressed records), 2 nothing could be done (bad
configuration, credentials, endpoint or a missing stream), with one line on stderr saying
what to do.
"""
