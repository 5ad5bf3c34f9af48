"""Rewrite tests/golden/reproduce_quick.json from fresh quick reproductions.

    python scripts/update_golden.py [papi] [pam]

Run this only when a change is meant to move the reproduced headline numbers; it prints
every headline that moved, so that the commit can say why.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from pimserve.experiments.reproduce import REPRODUCTIONS, reproduce

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden" / "reproduce_quick.json"


def main() -> None:
    names = sys.argv[1:] or REPRODUCTIONS.names()
    data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            res = reproduce(REPRODUCTIONS.get(name)(), Path(tmp), quick=True, progress=True)
        new = {h.name: h.value for h in res.headlines}
        old = data.get(name, {})
        for k, v in new.items():
            if k in old and old[k] is not None and v == v and abs(v - old[k]) > 1e-9 * abs(v):
                print(f"{name}: {k}: {old[k]:.4g} -> {v:.4g}")
        data[name] = {k: (v if v == v else None) for k, v in new.items()}
    GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
