"""``python -m firehose_buffer.emulator --port 0 ...``; see :mod:`.cli`."""

import sys

from .cli import main

sys.exit(main())
