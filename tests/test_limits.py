"""Limits with clear errors instead of memory errors: endless or huge files, absurd request
counts and batch sizes, KV state that would not fit (issue: engine at scale)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pimserve import simulate
from pimserve.cli.main import main
from pimserve.errors import ConfigurationError
from pimserve.fileio import FileTooLargeError, NotTextError, read_bounded
from pimserve.workload.presets import MAX_REQUESTS, make_workload
from pimserve.workload.request import Requests

DEV_ZERO = Path("/dev/zero")
needs_dev_zero = pytest.mark.skipif(not DEV_ZERO.exists(), reason="no /dev/zero")


def test_read_bounded_stops_at_the_bound_and_at_binary_data(tmp_path):
    p = tmp_path / "big.txt"
    p.write_bytes(b"a" * 1000)
    assert read_bounded(p, 1000, "thing") == b"a" * 1000
    with pytest.raises(FileTooLargeError, match="bound for a thing"):
        read_bounded(p, 999, "thing")
    b = tmp_path / "bin"
    b.write_bytes(b"ab\0cd")
    with pytest.raises(NotTextError, match="offset 2"):
        read_bounded(b, 1000, "trace", text=True)


@needs_dev_zero
@pytest.mark.parametrize("args", [
    ["run", "--trace", "/dev/zero", "--trace-format", "azure"],
    ["run", "--system", "/dev/zero"],
    ["run", "--model", "/dev/zero"],
    ["plot", "/dev/zero"],
])
def test_dev_zero_is_refused_in_one_line(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0
    assert "Traceback" not in r.output and "/dev/zero" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_request_count_beyond_the_bound_is_refused():
    with pytest.raises(ConfigurationError, match=f"{MAX_REQUESTS:,}"):
        make_workload("dolly-creative", MAX_REQUESTS + 1, 0)
    r = CliRunner().invoke(main, ["run", "--requests", "1000000000"])
    assert r.exit_code != 0 and "over the bound" in r.output


def test_kernels_rlp_beyond_the_bound_is_refused():
    r = CliRunner().invoke(main, ["kernels", "--rlp", "1000000000"])
    assert r.exit_code != 0 and "--rlp must be at most" in r.output


def test_kv_state_beyond_the_bound_is_a_clear_error():
    """One request of 10^7 tokens at 1-token blocks on PAM: the exact model's per-block state
    would need far more than the bound; the run says so instead of asking numpy for terabytes
    (the summary model, the default, holds a fixed number of columns per request instead)."""
    req = Requests(id=np.arange(1), arrival_s=np.zeros(1), prompt_tokens=np.array([10**7]),
                   output_tokens=np.array([2]))
    with pytest.raises(ConfigurationError, match="GiB of per-block KV state"):
        simulate("pam", "llama3.1-70b", req, kv_block_tokens=1, max_iterations=3,
                 long_context="allow", kv_model="exact")


def test_long_context_preset_and_llama31_presets():
    r = make_workload("long-context", 4000, 0)
    p = np.asarray(r.prompt_tokens)
    total = p + np.asarray(r.output_tokens)
    assert 10_000 < p.mean() < 14_000 and total.max() <= 131072 and p.max() > 60_000
    assert np.all(np.diff(np.asarray(r.arrival_s)) >= 0) and r.arrival_s[-1] > 0  # Poisson
    from pimserve.specs.catalog import load_model

    for name, params_b in (("llama3.1-8b", 8.0), ("llama3.1-70b", 70.6),
                           ("llama3.1-405b", 405.9)):
        m = load_model(name)
        assert m.max_context == 131072
        assert m.n_params / 1e9 == pytest.approx(params_b, rel=0.01)


def test_no_file_is_read_without_a_bound():
    """Every place that reads a user file goes through pimserve.fileio (grep the source)."""
    src = Path(__file__).resolve().parents[1] / "src" / "pimserve"
    offenders = []
    for f in src.rglob("*.py"):
        text = f.read_text()
        for needle in (".read_text()", ".read_bytes()"):
            if needle in text and f.name not in ("fileio.py", "presets.py"):
                offenders.append(f"{f.relative_to(src)}: {needle}")
    assert offenders == [], offenders
    assert os.sep  # (presets.py reads its own packaged data file only)
