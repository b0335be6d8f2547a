"""``python -m firehose_buffer.emulator --port 0 ...``; see :mod:`firehose_buffer.cli.emulator`."""

import sys

from ..cli.emulator import main

sys.exit(main())
