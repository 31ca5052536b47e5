"""The ``negkit`` command line (needs the ``cli`` extra: ``pip install 'negkit[cli]'``)."""

from __future__ import annotations

import sys

try:
    from negkit.cli.app import app
except ImportError as _error:  # the core install has no typer/rich/pydantic: `negkit` says what to install
    app = None
    _missing: ImportError | None = _error
else:
    _missing = None


def main() -> None:
    """Entry point of the ``negkit`` script: a missing CLI dependency is one line and exit status 2."""
    if app is None:
        print(f"error: the negkit command needs the cli extra ({_missing}): pip install 'negkit[cli]'", file=sys.stderr)
        raise SystemExit(2)
    app()


__all__ = ["app", "main"]
