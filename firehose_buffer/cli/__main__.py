"""``python -m firehose_buffer.cli``: the ``firehose-buffer`` command."""

import sys

from . import main

sys.exit(main())
