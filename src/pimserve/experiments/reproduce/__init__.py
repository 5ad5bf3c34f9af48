"""Paper reproductions: ``pimserve reproduce papi`` and ``pimserve reproduce pam``.

Each reproduction is a :class:`~.common.Reproduction` registered in :data:`REPRODUCTIONS`;
:func:`~.common.reproduce` runs its grid on the sweep runner (a store in the output folder,
any executor, resumable) and writes ``results.csv``, ``results.json``, PNG figures and
``report.md`` (headline numbers next to the paper's, the open parameters and a sensitivity
table).
"""

from __future__ import annotations

from pimserve.experiments.reproduce.common import (
    Headline,
    Parameter,
    Point,
    Reproduction,
    ReproductionResult,
    reproduce,
)
from pimserve.registry import Registry

REPRODUCTIONS: Registry = Registry("reproduction")


def _register() -> None:
    from pimserve.experiments.reproduce.pam import PAMReproduction
    from pimserve.experiments.reproduce.papi import PAPIReproduction

    REPRODUCTIONS.register("papi")(PAPIReproduction)
    REPRODUCTIONS.register("pam")(PAMReproduction)


_register()

__all__ = ["REPRODUCTIONS", "Headline", "Parameter", "Point", "Reproduction",
           "ReproductionResult", "reproduce"]
