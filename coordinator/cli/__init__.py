"""The `lusifer` command line: one module per command group."""

from coordinator.cli.common import app
from coordinator.cli.run import main

__all__ = ["app", "main"]
