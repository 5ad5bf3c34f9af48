"""`pimserve plot`: PNG charts of run and compare results; clear errors for other files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

import pimserve
from pimserve.cli.main import main
from pimserve.errors import ResultError
from pimserve.report.plots import CHARTS, plot_results, read_results
from pimserve.specs import load_system

PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG, path
    with Image.open(path) as im:
        w, h = im.size
    assert w >= 400 and h >= 300, (path, w, h)


@pytest.fixture(scope="module")
def run_json(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    out = d / "papi.json"
    r = invoke("run", "--requests", "48", "--batch", "16", "--tlp", "4", "--record-steps",
               "--out", str(out), "--format", "json")
    assert r.exit_code == 0, r.output
    return out


def test_run_result_holds_what_the_plots_need(run_json: Path) -> None:
    r = json.loads(run_json.read_text())
    # energy breakdown: its parts add up to the total
    assert sum(r["energy_breakdown_j"].values()) == pytest.approx(r["energy_j"], rel=1e-9)
    assert set(r["energy_breakdown_j"]) == set(r["time_breakdown_s"])
    # latency quantiles: same percentiles as the summary (both np.percentile, linear)
    q = r["extra"]["latency_quantiles"]
    levels = q["levels"]
    assert levels[0] == 0 and levels[-1] == 100 and levels == sorted(levels)
    for key in ("ttft_ms", "tpot_ms"):
        assert np.all(np.diff(q[key]) >= 0)
        assert q[key][levels.index(50.0)] == pytest.approx(r[key]["p50"])
        assert q[key][levels.index(99.0)] == pytest.approx(r[key]["p99"])
    # the step log counts every output token
    assert sum(r["extra"]["steps"]["tokens"]) == r["output_tokens"]


def test_plot_a_run(run_json: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    r = invoke("plot", str(run_json), "--out", str(out), "--format", "json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert set(rep["files"]) == set(CHARTS) - {"kv_tiers"}
    assert "KV tiers" in rep["skipped"]["kv_tiers"]
    for name in rep["files"]:
        check_png(out / f"{name}.png")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in rep["files"])


def test_plot_default_folder_is_beside_the_results(run_json: Path) -> None:
    r = invoke("plot", str(run_json))
    assert r.exit_code == 0, r.output
    folder = run_json.with_name("papi_plots")
    check_png(folder / "throughput.png")
    assert "skipped" in r.output  # kv_tiers, with its reason, in the table


def test_plot_without_step_log_skips_placement(tmp_path: Path) -> None:
    res = pimserve.simulate("papi", "llama-65b", "dolly-creative", n_requests=16)
    src = tmp_path / "r.json"
    src.write_text(res.to_json())
    rep = plot_results(src, tmp_path / "p")
    assert "--record-steps" in rep.skipped["fc_placement"]
    assert {"throughput", "latency_cdf", "time_breakdown", "energy_breakdown"} <= set(rep.files)


def test_plot_a_compare_with_a_tiered_system(tmp_path: Path) -> None:
    d = load_system("pam").model_dump()
    d["name"] = "small-tiers"
    d["tensor_parallel"], d["pipeline_parallel"] = 1, 1
    for i, n in enumerate((1, 2, 1, 1)):
        d["groups"][i]["count"] = n
    sys_file = tmp_path / "small-tiers.yaml"
    sys_file.write_text(yaml.safe_dump(d))
    cmp = tmp_path / "cmp.json"
    r = invoke("compare", "--systems", f"{sys_file},papi", "--model", "llama3-8b",
               "--workload", "arxiv-sum", "--requests", "256", "--batch", "256",
               "--batching", "continuous", "--max-iterations", "15", "--record-steps",
               "--out", str(cmp), "--format", "json")
    assert r.exit_code == 0, r.output
    out = tmp_path / "plots"
    r = invoke("plot", str(cmp), "--out", str(out), "--format", "json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert set(rep["files"]) == set(CHARTS) and rep["skipped"] == {}
    for name in CHARTS:
        check_png(out / f"{name}.png")
    runs = read_results(json.loads(cmp.read_text()), "cmp").runs
    assert [n for n, _ in runs] == ["small-tiers", "papi"]  # a system file by its name


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"system": "papi", "throughput', "not JSON (line 1"),
        ("[1, 2, 3]", "got a JSON list"),
        ('{"hello": 1}', "neither a run result"),
        ('{"system": "papi", "model": "m"}', "missing 'workload'"),
        ('{"baseline": "a", "runs": []}', "'runs' must be a non-empty list"),
        ('{"baseline": "a", "runs": [{"system": "a"}]}', "runs[0]: expected an object"),
        ('{"runs": [{"system": "a", "result": {"system": "a", "model": "m", "workload": "w", '
         '"throughput_tok_s": "fast", "output_tokens": 1, "simulated_time_s": 1, '
         '"time_breakdown_s": {}, "energy_j": 1}}]}',
         "runs[0].result: 'throughput_tok_s' must be a number"),
        ('{"traceEvents": [], "displayTimeUnit": "ms"}', "this is a timeline"),
    ],
)
def test_bad_results_file_is_one_clear_line(tmp_path: Path, content: str, needle: str) -> None:
    src = tmp_path / "bad.json"
    src.write_text(content)
    r = invoke("plot", str(src), "--out", str(tmp_path / "p"))
    assert r.exit_code == 2
    out = r.output.strip()
    assert needle in out and str(src) in out, out
    assert "Traceback" not in out and len(out.splitlines()) == 1
    assert not (tmp_path / "p").exists()


def test_missing_results_file(tmp_path: Path) -> None:
    r = invoke("plot", str(tmp_path / "nope.json"))
    assert r.exit_code == 2 and "cannot read" in r.output
    with pytest.raises(ResultError, match="cannot read"):
        plot_results(tmp_path / "nope.json", tmp_path / "p")


def test_importing_the_figure_modules_leaves_matplotlibs_backend_alone() -> None:
    """Plots and reproduction figures draw on their own Agg canvases: importing them does not
    switch a user's (a notebook's) backend."""
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); "
            "import pimserve.report.plots, pimserve.report.figures, "
            "pimserve.experiments.reproduce; print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "svg"
