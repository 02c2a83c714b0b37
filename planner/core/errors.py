"""Errors the planner raises on purpose. The CLI turns ``InputError`` into one stderr line and
exit code 2; ``FitError`` means inference failed (divergent or non-finite), never a silent NaN."""
from __future__ import annotations


class PlannerError(Exception):
    """Base class for the planner's own errors."""


class InputError(PlannerError, ValueError):
    """Bad user input: a malformed config or table, a missing file, an invalid argument."""


class FitError(PlannerError, RuntimeError):
    """A fit that did not produce a usable posterior (non-finite or divergent)."""


class LedgerError(InputError):
    """A campaign ledger that is corrupt, foreign, or locked by another planner."""
