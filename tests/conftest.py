"""Shared fixtures: the quick paper reproductions run once per test session."""

from __future__ import annotations

import pytest

from pimserve.experiments.reproduce import REPRODUCTIONS, ReproductionResult, reproduce


@pytest.fixture(scope="session")
def papi_quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    """`pimserve reproduce papi --quick`, written to a temporary folder (about 1.5 min)."""
    out = tmp_path_factory.mktemp("reproduce-papi")
    return reproduce(REPRODUCTIONS.get("papi")(), out, quick=True)


@pytest.fixture(scope="session")
def pam_quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    """`pimserve reproduce pam --quick` (with its sensitivity table), written to a temporary
    folder once per session (about 2 min on 2 cores)."""
    out = tmp_path_factory.mktemp("reproduce-pam")
    return reproduce(REPRODUCTIONS.get("pam")(), out, quick=True)
