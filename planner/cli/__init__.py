"""The ``planner`` command line (``planner.cli.main``): argument parsing only."""
from planner.cli.main import main

__all__ = ["main"]
