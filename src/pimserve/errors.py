"""User-facing errors.

Every problem with what a user gave (a preset name, a YAML file, a trace row, an impossible
configuration) raises a subclass of :class:`PimserveError` whose message is one line naming the
field or line and the accepted values. The CLI prints that line and exits with status 2; it never
shows a traceback for these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PimserveError(Exception):
    """Base class for every error caused by user input or configuration."""


class UnknownNameError(PimserveError, KeyError):
    """A preset or plug-in name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        super().__init__(f"unknown {kind} '{name}'{hint} (known: {', '.join(known)})")
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class SpecError(PimserveError, ValueError):
    """A spec (YAML or config.json) with a wrong field, type, unit or value."""


class TraceError(PimserveError, ValueError):
    """A trace file that cannot be read; the message names the file and line."""


class ConfigurationError(PimserveError, ValueError):
    """A combination that cannot run: a model that does not fit, TLP 0, a negative rate."""


class ResultError(PimserveError, ValueError):
    """A results file that cannot be used: unreadable, not JSON, or not a run or compare
    result; the message names the file and what is wrong or missing."""
