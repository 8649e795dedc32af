"""``python -m rotator``: the command line, as the ``rotator`` script runs it."""

from __future__ import annotations

import sys

from rotator.cli import main

sys.exit(main())
