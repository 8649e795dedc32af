"""The ``rotator`` command line: parsing and dispatch (``main``) and rendering (``render``).

It only parses, calls the use cases in ``rotator.app`` (or the daemon for ``run``) and
prints what they return. Nothing imports this package but ``rotator.__main__`` and the
``rotator`` script.
"""

from __future__ import annotations

from rotator.cli.main import main

__all__ = ["main"]
