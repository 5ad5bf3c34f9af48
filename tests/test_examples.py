"""The example scripts run and print what they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_and_reports_a_recalibrated_alpha():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "PAPI:" in out.stdout and "goodput" in out.stdout
    assert "recalibrated for papi-20-fc-pim" in out.stdout
