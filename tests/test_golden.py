"""Golden values: the headline numbers of the quick reproductions are pinned.

A change that moves a headline by more than the tolerance fails here and must update
tests/golden/reproduce_quick.json on purpose (``python scripts/update_golden.py``), with the
reason in its commit message.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

GOLDEN = json.loads((Path(__file__).parent / "golden" / "reproduce_quick.json").read_text())
REL_TOL = 0.02  # the runs are deterministic; 2% leaves room for numpy/platform differences


def _check(name: str, result) -> None:
    pinned = GOLDEN[name]
    got = {h.name: h.value for h in result.headlines}
    assert set(got) == set(pinned), "headlines added or removed: update the golden file"
    moved = []
    for k, v in pinned.items():
        g = got[k]
        if v is None:
            if not math.isnan(g):
                moved.append(f"{k}: pinned n/a, now {g:.4g}")
        elif math.isnan(g) or abs(g - v) > REL_TOL * abs(v):
            moved.append(f"{k}: pinned {v:.4g}, now {g:.4g}")
    assert not moved, ("reproduced headlines moved (python scripts/update_golden.py if "
                       "intended):\n" + "\n".join(moved))


def test_papi_quick_headlines_are_pinned(papi_quick) -> None:
    _check("papi", papi_quick)


@pytest.mark.skipif("pam" not in GOLDEN, reason="PAM golden values not recorded yet")
def test_pam_quick_headlines_are_pinned(request) -> None:
    _check("pam", request.getfixturevalue("pam_quick"))
