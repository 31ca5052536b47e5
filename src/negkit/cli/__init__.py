"""The ``negkit`` command line."""

from negkit.cli.app import app, main

__all__ = ["app", "main"]
