"""`pimserve reproduce` and `pimserve calibrate` on the sweep runner: a reproduction point's
row read back from the store is exactly the row of a direct run, every executor gives the
same rows, a resumed run runs nothing and gives the same results, and a rerun without
--resume is refused with one line."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from pimserve import simulate
from pimserve.cli.main import main
from pimserve.errors import ConfigurationError, PimserveError
from pimserve.experiments.calibration import calibrate_xy
from pimserve.experiments.reproduce.common import (
    Headline,
    Parameter,
    Point,
    Reproduction,
    reproduce,
    row_metrics,
    run_points,
    scaled_system,
)
from pimserve.experiments.slo import slo_search
from pimserve.experiments.sweep import PoolExecutor, SerialExecutor, Store
from pimserve.experiments.sweep.resolve import config_for, materialize, point_key


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _without_wall(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "wall_s"}


def _rows_equal(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        x, y = _without_wall(x), _without_wall(y)
        assert list(x) == list(y)  # same columns in the same order
        assert all(_same(x[k], y[k]) for k in x), (x, y)


# ------------------------------------------------------------------------------------------
# a point's row from the store is the direct run's row


PAPI_OPTS = {"batching": "static", "batch": 4, "tlp": 2, "seed": 0}
PAM_OPTS = {"batching": "continuous", "batch": 8, "max_iterations": 10, "seed": 0}
SLO = {"tpot_slo_ms": 20.0, "percentile": "p99", "n_requests": 16, "max_probes": 3}


def _points() -> list[Point]:
    gpu = scaled_system("papi", devices={"a100-hbm3": {"allreduce_step_ns": 1.25}})
    return [
        Point({"experiment": "t", "system": "papi"}, "papi", "llama-65b", "dolly-qa", 8,
              PAPI_OPTS),
        Point({"experiment": "t", "system": "papi", "ablation": "gpu"}, gpu, "llama-65b",
              "dolly-qa", 8, PAPI_OPTS),
        Point({"experiment": "t", "system": "pam"}, "pam", "llama3-70b", "arxiv-sum", 16,
              PAM_OPTS),
        Point({"experiment": "slo", "system": "papi", "slo_ms": 20}, "papi", "llama-65b",
              "dolly-qa", 16, {"batching": "continuous", "batch": 8}, slo=dict(SLO)),
        Point({"experiment": "t", "system": "papi", "batch": 0}, "papi", "llama-65b",
              "dolly-qa", 8, {"batch": 0}),
    ]


def test_rows_from_the_store_are_the_direct_runs_rows():
    """What the reproductions' headlines read must not change by going through the store:
    NaN/None, ints, the dict fields flattened to columns and back, the SLO search's row."""
    pts = _points()
    rows = run_points(pts, jobs=1)
    for p, row in zip(pts[:3], rows[:3], strict=True):
        r = simulate(p.system, p.model, p.workload, n_requests=p.n_requests, **p.options)
        _rows_equal([row], [{**p.labels, **row_metrics(r)}])
    assert rows[1]["time_communication_s"] > rows[0]["time_communication_s"]  # scaled GPU
    assert rows[2]["kv_bytes_hbm"] > 0 and "attention_time_hbm_s" in rows[2]
    slo = slo_search("papi", "llama-65b", "dolly-qa", seed=0, batching="continuous", batch=8,
                     **SLO)
    assert slo.met  # else the comparison below would only see zeros
    best = next(p for p in slo.probes if p.rate_per_s == slo.best_rate_per_s)
    assert _without_wall(rows[3]) == {
        **pts[3].labels, "throughput_tok_s": slo.throughput_tok_s,
        "offered_tok_s": slo.offered_tok_s, "slo_met": True,
        "best_rate_per_s": slo.best_rate_per_s, "tpot_ms": slo.tpot_ms,
        "probes": len(slo.probes), "drain_fraction": best.drain_fraction,
        "mean_rlp": best.mean_rlp}
    assert "batch" in rows[4]["error"] and "throughput_tok_s" not in rows[4]


def test_config_for_round_trips_and_keys_by_content():
    """config_for + materialize give back the very specs simulate would run; a scaled
    device is held by content (renamed ~hash), so its key differs from the preset's while the
    system keeps its name (PAPI's alpha stays the preset's, as in simulate)."""
    gpu = scaled_system("papi", devices={"a100-hbm3": {"allreduce_step_ns": 1.25}})
    plain = config_for("papi", "llama-65b", "dolly-qa", 8, PAPI_OPTS)
    scaled = config_for(gpu, "llama-65b", "dolly-qa", 8, PAPI_OPTS)
    assert point_key(plain) != point_key(scaled)
    assert point_key(plain) == point_key(config_for("papi", "llama-65b", "dolly-qa", 8,
                                                    {**PAPI_OPTS, "seed": 0}))
    assert scaled["system"]["name"] == "papi"
    names = [g["device"] for g in scaled["system"]["groups"]]
    assert any(n.startswith("a100-hbm3~") for n in names)
    new = next(d for n, d in scaled["devices"].items() if n.startswith("a100-hbm3~"))
    assert new["allreduce_step_ns"] == pytest.approx(6060 * 1.25)  # AttAcc's 6,060 ns x 1.25
    r = materialize(scaled)
    assert r.system.name == "papi" and r.cfg.batch == 4 and len(r.requests) == 8
    with pytest.raises(PimserveError, match="batch"):
        config_for("papi", "llama-65b", "dolly-qa", 8, {"batch": 0})


# ------------------------------------------------------------------------------------------
# a small reproduction: executors and resume


class _Tiny(Reproduction):
    """Five points, one open parameter (a scaled GPU), one headline."""

    name = "tiny"
    title = "tiny"
    notes: ClassVar[list[str]] = []

    def points(self, quick: bool) -> list[Point]:
        return _points()

    def headlines(self, rows):
        by = {(r["experiment"], r.get("ablation")): r for r in rows if "error" not in r}
        a, b = by.get(("t", None)), by.get(("t", "gpu"))
        v = a["throughput_tok_s"] / b["throughput_tok_s"] if a and b else math.nan
        return [Headline("papi / scaled", 1.0, v, "here")]

    def sensitivity_points(self, quick: bool) -> list[Point]:
        return _points()[:2]

    def parameters(self) -> list[Parameter]:
        def link(p: Point, f: float) -> Point:
            return Point(p.labels, scaled_system(p.system, links={"pcie5": {"bw_gbps": f}}),
                         p.model, p.workload, p.n_requests, p.options, p.slo)

        return [Parameter("link", "64 GB/s", "why", link)]


def test_serial_and_pool_give_identical_rows(tmp_path):
    one = reproduce(_Tiny(), tmp_path / "serial", executor=SerialExecutor())
    two = reproduce(_Tiny(), tmp_path / "pool", executor=PoolExecutor(2))
    _rows_equal(one.rows, two.rows)
    assert one.sensitivity == two.sensitivity and one.sensitivity
    assert [h.value for h in one.headlines] == [h.value for h in two.headlines]
    # 5 grid points + 2 sensitivity bases (the same configurations: stored once) + 2 x 2
    # scaled-link points = 9 distinct points, one of them unresolvable
    assert one.summary is not None and one.summary.points == 9
    assert one.summary.ran == 8 and one.summary.invalid == 1
    assert Store(tmp_path / "pool").count() == 9


def test_resume_runs_nothing_and_gives_the_same_rows(tmp_path):
    first = reproduce(_Tiny(), tmp_path, executor=SerialExecutor())
    with pytest.raises(ConfigurationError, match="--resume"):
        reproduce(_Tiny(), tmp_path, executor=SerialExecutor())
    again = reproduce(_Tiny(), tmp_path, executor=PoolExecutor(2), resume=True)
    assert again.summary is not None
    assert again.summary.ran == 0 and again.summary.stored_before == 9
    _rows_equal(again.rows, first.rows)
    # wall_s too: it is read from the store, not measured again
    assert [r["wall_s"] for r in again.rows] == [r["wall_s"] for r in first.rows]
    assert again.sensitivity == first.sensitivity
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]["runner"]
    assert meta["ran"] == 0 and meta["points"] == 9


def test_papi_quick_resumed_from_its_store_runs_no_point(papi_quick, tmp_path):
    """The quick PAPI reproduction's own store, resumed: nothing runs and every row,
    headline and sensitivity value is the first run's."""
    src = sqlite3.connect(papi_quick.out / "sweep.sqlite")
    dst = sqlite3.connect(tmp_path / "sweep.sqlite")
    src.backup(dst)
    src.close()
    dst.close()
    args = ["reproduce", "papi", "--quick", "--out", str(tmp_path), "--workers", "2"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2
    assert "--resume" in refused.output and len(refused.output.strip().splitlines()) == 1
    res = CliRunner().invoke(main, [*args, "--resume", "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["runner"]["ran"] == 0 and out["runner"]["stored_before"] > len(papi_quick.rows)
    got = {h["name"]: h["value"] for h in out["headlines"]}
    assert all(_same(got[h.name], h.value) for h in papi_quick.headlines)
    data = json.loads((tmp_path / "results.json").read_text())
    first = json.loads((papi_quick.out / "results.json").read_text())
    _rows_equal(data["rows"], first["rows"])
    assert data["sensitivity"] == first["sensitivity"]
    assert data["gap_closers"] == first["gap_closers"]


def test_cli_runner_options_are_checked():
    r = CliRunner().invoke(main, ["reproduce", "papi", "--workers", "0"])
    assert r.exit_code == 2 and "--workers" in r.output
    r = CliRunner().invoke(main, ["reproduce", "papi", "--workers", "2", "--jobs", "3"])
    assert r.exit_code == 2 and "--jobs" in r.output
    r = CliRunner().invoke(main, ["calibrate", "--system", "papi", "--workers", "2"])
    assert r.exit_code == 2 and "only for PAM" in r.output
    r = CliRunner().invoke(main, ["calibrate", "--system", "pam", "--resume"])
    assert r.exit_code == 2 and "--out" in r.output


# ------------------------------------------------------------------------------------------
# calibrate: PAM's x:y on the runner


XY = {"workload": "arxiv-sum", "batch": 64, "iterations": 5, "grid_x": (2.0, 4.0),
      "grid_y": (1.0, 2.0)}


def test_calibrate_xy_resumes_and_matches_direct_runs(tmp_path):
    first = calibrate_xy("pam", "llama3-70b", **XY, store=tmp_path, executor=PoolExecutor(2))
    # y < x: (2, 1), (4, 1), (4, 2)
    assert [(p["x"], p["y"]) for p in first.points] == [(2.0, 1.0), (4.0, 1.0), (4.0, 2.0)]
    assert first.summary is not None and first.summary.ran == 3
    r = simulate("pam", "llama3-70b", "arxiv-sum", n_requests=64, batch=64,
                 batching="continuous", max_iterations=5, kv_x=4.0, kv_y=2.0, seed=0)
    assert first.points[2]["attention_s"] == r.time_breakdown_s["attention"]
    assert first.points[2]["throughput_tok_s"] == r.throughput_tok_s
    with pytest.raises(ConfigurationError, match="--resume"):
        calibrate_xy("pam", "llama3-70b", **XY, store=tmp_path, executor=SerialExecutor())
    again = calibrate_xy("pam", "llama3-70b", **XY, store=tmp_path, executor=SerialExecutor(),
                         resume=True)
    assert again.summary is not None and again.summary.ran == 0
    assert (again.x, again.y, again.points) == (first.x, first.y, first.points)
    assert Path(again.store or "").name == "sweep.sqlite"


def test_reproduction_points_run_on_ray(tmp_path):
    """Scaled devices travel as content in the configuration, so a Ray worker (no shared
    scratch folder, no fork) runs them to the same rows."""
    pytest.importorskip("ray")
    from pimserve.experiments.sweep import RayExecutor

    ex = RayExecutor("auto", 1)
    try:
        ray_rows = reproduce(_Tiny(), tmp_path / "ray", executor=ex, sensitivity=False).rows
    finally:
        ex.close()
    serial = reproduce(_Tiny(), tmp_path / "serial", executor=SerialExecutor(),
                       sensitivity=False).rows
    _rows_equal(ray_rows, serial)
