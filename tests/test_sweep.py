"""`pimserve sweep`: specs and their errors, parameter paths that really change the system,
strategies, the store (kill and resume, concurrent writers), Pareto fronts and the report."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from pimserve import simulate
from pimserve.cli.main import main
from pimserve.errors import ConfigurationError, SpecError
from pimserve.experiments.sweep import (
    PoolExecutor,
    SerialExecutor,
    Store,
    expand,
    pareto_mask,
    run_points,
    run_sweep,
    sweep_spec_from_dict,
)
from pimserve.experiments.sweep.expr import Expr
from pimserve.experiments.sweep.report import analyse, write_report
from pimserve.experiments.sweep.runner import NONDETERMINISTIC_COLUMNS, hardware_cost_available
from pimserve.experiments.sweep.space import parse_domain
from pimserve.specs.catalog import load_system

ROOT = Path(__file__).resolve().parents[1]
BASE = {"system": "papi", "model": "llama-65b", "workload": "dolly-creative", "n_requests": 16}


def spec_of(parameters: dict[str, Any], **top: Any) -> Any:
    return sweep_spec_from_dict({"name": top.pop("name", "t"),
                                 "base": {**BASE, **top.pop("base", {})},
                                 "parameters": parameters, **top})


def results(store: Store) -> dict[str, dict[str, Any]]:
    """Every row by key, without the wall-clock columns (which measure the run)."""
    return {r["key"]: {k: v for k, v in r.items() if k not in NONDETERMINISTIC_COLUMNS
                       and k != "sweep"} for r in store.rows()}


# ------------------------------------------------------------------------------------------
# spec parsing and errors


def test_value_forms():
    # {start, stop, step}: stop included when on the grid: 4, 8, 12, 16
    assert parse_domain({"start": 4, "stop": 16, "step": 4}, "p").values == (4, 8, 12, 16)
    # log-spaced with integer ends: geomspace(4, 64, 3) = 4, 16, 64
    assert parse_domain({"start": 4, "stop": 64, "num": 3, "log": True}, "p").values == \
        (4, 16, 64)
    assert parse_domain({"start": 0.5, "stop": 1.0, "num": 3}, "p").values == (0.5, 0.75, 1.0)
    d = parse_domain({"dist": "int", "low": 12, "high": 20, "step": 4}, "p")
    assert d.enumerate() == (12, 16, 20) and d.size() == 3
    assert parse_domain([1, "a"], "p").values == (1, "a")
    assert parse_domain(7, "p") == (7,)
    assert isinstance(parse_domain({"expr": "90 - a"}, "p"), Expr)


@pytest.mark.parametrize("params, top, fragment", [
    ({"groups.atn.count": [1]}, {}, "no such group 'atn' (accepted: gpu, fc_pim, attn"),
    ({"groups.attn.cuont": [1]}, {}, "did you mean 'count'?"),
    ({"groups.attn.device.banks_per_fpuu": [1]}, {}, "did you mean 'banks_per_fpu'?"),
    ({"groups.attn.link.bandwidth": [1]}, {}, "accepted after 'groups.attn.link': "),
    ({"bacth": [1]}, {}, "did you mean 'batch'?"),
    ({"policies.kv.xx": [1]}, {}, "unknown"),
    ({"batch": ["big"]}, {}, "parameter 'batch': value 'big' is not accepted"),
    ({"batching": ["static", "eager"]}, {}, "'auto', 'static' or 'continuous'"),
    ({"tlp": [2.5]}, {}, "fractional part"),
    ({"groups.attn.count": "90 - groups.fcpim.count", "groups.fc_pim.count": [30]}, {},
     "did you mean 'groups.fc_pim.count'?"),
    ({"a.b": 1}, {}, "unknown path"),
    ({"batch": {"dist": "uniform", "low": 1, "high": 8}}, {}, "a grid needs a finite list"),
    ({"batch": {"start": 1, "stop": 8}}, {}, "either 'step' or 'num'"),
    ({"batch": {"dist": "gauss"}}, {}, "uniform, loguniform, int, choice"),
    ({"batch": [16]}, {"strategy": "random"}, "needs 'samples'"),
    ({"batch": [16]}, {"objectives": ["speed"]}, "unknown objective 'speed'"),
    ({"batch": [16], "run.batch": [8]}, {}, "set the same field"),
    ({"tlp": {"expr": "batch + 1"}, "batch": {"expr": "tlp * 2"}}, {}, "circle"),
    ({"batch": {"expr": "__import__('os')"}}, {}, "not allowed"),
    ({"batch": {"expr": "tlp ** 2"}, "tlp": [1]}, {}, "Pow, which is not allowed"),
    ({"groups.attn.device": ["hbm-pim-9p9b"]}, {}, "unknown device 'hbm-pim-9p9b'"),
])
def test_spec_errors_name_the_field_and_the_accepted_values(params, top, fragment):
    with pytest.raises(SpecError) as err:
        spec_of(params, **top)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg


def test_malformed_yaml_and_unknown_keys_give_one_line_on_the_cli(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base:\n  system: papi\nparameters: {batch: [1, 2\n")
    r = CliRunner().invoke(main, ["sweep", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "malformed YAML" in r.output and "line" in r.output
    assert "Traceback" not in r.output
    bad.write_text("base: {system: papi}\nparameter: {batch: [1]}\n")
    r = CliRunner().invoke(main, ["sweep", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown field 'parameter'" in r.output
    assert "did you mean 'parameters'?" in r.output


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["90 - batch", "tlp * 2", "1/0", "papi", "uniform"]))
_KEYS = st.one_of(st.text(max_size=8), st.sampled_from([
    "batch", "tlp", "alpha", "groups.attn.count", "groups.attn.device.banks_per_fpu",
    "groups.attn.link.bw_gbps", "policies.alpha", "system", "start", "stop", "step", "num",
    "log", "dist", "low", "high", "values", "expr", "kind", "samples"]))
_VALUES = st.recursive(_SCALARS, lambda c: st.one_of(st.lists(c, max_size=3),
                                                     st.dictionaries(_KEYS, c, max_size=3)),
                       max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "parameters": st.one_of(_VALUES, st.dictionaries(_KEYS, _VALUES, max_size=3)),
    "strategy": _VALUES, "constraints": _VALUES, "objectives": _VALUES}))
def test_any_spec_loads_or_fails_with_a_pimserve_error(data):
    from pimserve.errors import PimserveError

    try:
        spec = sweep_spec_from_dict({"base": {"n_requests": 2}, **data})
        if spec.strategy.kind != "optuna":
            expand(spec, limit=2)
    except PimserveError:
        pass


def test_expressions_are_arithmetic_only():
    e = Expr("90 - groups.fc_pim.count", "p")
    assert e.names == ("groups.fc_pim.count",)
    assert e.evaluate({"groups.fc_pim.count": 30}) == 60
    assert Expr("a // 3 + 1e1 * 2 % 7", "p").evaluate({"a": 10}) == 3 + (20.0 % 7)
    assert Expr("a + b <= 90 and not a < 10", "p").evaluate({"a": 30, "b": 60}) is True
    assert Expr("a + b <= 90 and not a < 10", "p").evaluate({"a": 5, "b": 60}) is False
    for text in ("(a).real", "f(a)", "a[0]", "'x'", "lambda: 1", "a if a else 1"):
        with pytest.raises(SpecError):
            Expr(text, "p")
    with pytest.raises(ConfigurationError, match="divides by zero"):
        Expr("1 / a", "p").evaluate({"a": 0})


# ------------------------------------------------------------------------------------------
# overrides change the simulated system


def test_paths_change_the_system_and_unchanged_points_are_the_presets(tmp_path):
    spec = spec_of({"groups.attn.count": [30, 60],
                    "groups.attn.device.banks_per_fpu": [2, 1],
                    "groups.attn.link.bw_gbps": [64, 16]},
                   base={"run": {"batch": 8, "tlp": 2}})
    exp = expand(spec)
    assert len(exp.points) == 8 and not exp.invalid
    by = {tuple(p.params.values()): p for p in exp.points}
    preset = by[(60, 2, 64)]  # PAPI as shipped: 60 Attn-PIM, 1P2B, PCIe 5 (64 GB/s)
    cfg = preset.config
    assert cfg["system"]["name"] == "papi"
    assert [g["device"] for g in cfg["system"]["groups"]] == [
        "a100-hbm3", "papi-fc-pim-4p1b", "papi-attn-pim-1p2b"]
    changed = by[(30, 1, 16)].config
    attn = changed["system"]["groups"][2]
    assert attn["count"] == 30 and changed["system"]["name"].startswith("papi~")
    assert changed["devices"][attn["device"]]["banks_per_fpu"] == 1
    assert attn["device"].startswith("papi-attn-pim-1p2b~")
    assert changed["links"][attn["link"]]["bw_gbps"] == 16
    store = Store(tmp_path)
    run_points(exp.points, store, SerialExecutor())
    rows = {tuple(json.loads(r["params_json"]).values()): r for r in store.rows()}
    direct = simulate("papi", "llama-65b", "dolly-creative", n_requests=16, batch=8,
                      tlp=2)
    # the shipped configuration gives exactly what `pimserve run` gives
    assert rows[(60, 2, 64)]["throughput_tok_s"] == direct.throughput_tok_s
    # the same system written out by hand gives exactly the swept point
    papi = load_system("papi")
    groups = [g.model_copy(update={"count": 30}) if g.role == "attn" else g
              for g in papi.groups]
    by_hand = simulate(papi.model_copy(update={"groups": groups, "name": "papi-30"}),
                       "llama-65b", "dolly-creative", n_requests=16, batch=8, tlp=2)
    assert rows[(30, 2, 64)]["throughput_tok_s"] == by_hand.throughput_tok_s
    # each path moves the result: fewer Attn-PIM stacks, FPUs per bank, a slower link
    t = {k: r["throughput_tok_s"] for k, r in rows.items()}
    assert t[(30, 2, 64)] < t[(60, 2, 64)]
    assert t[(60, 1, 64)] > t[(60, 2, 64)]  # 1P1B: twice the FPUs of 1P2B
    assert t[(60, 2, 16)] < t[(60, 2, 64)]
    if hardware_cost_available():  # more stacks, more PIM logic
        assert rows[(30, 2, 64)]["hw_pim_logic_mm2"] < rows[(60, 2, 64)]["hw_pim_logic_mm2"]
    else:
        assert rows[(60, 2, 64)]["hw_pim_logic_mm2"] is None
        assert "hardware.area" in rows[(60, 2, 64)]["hw_note"]


def test_a_path_some_swept_systems_lack_makes_their_points_invalid(tmp_path):
    spec = spec_of({"system": ["papi", "pam"], "groups.attn.count": [30]},
                   base={"n_requests": 4})
    run_sweep(spec, tmp_path, SerialExecutor())
    rows = {r["param.system"]: r for r in Store(tmp_path).rows()}
    assert rows["papi"]["status"] == "ok" and rows["papi"]["system"].startswith("papi~")
    assert rows["pam"]["status"] == "invalid"
    assert "system pam has no such group 'attn'" in rows["pam"]["reason"]
    with pytest.raises(SpecError, match="no such group 'attn'"):
        spec_of({"system": ["pam"], "groups.attn.count": [30]})


def test_trace_bases_refuse_preset_parameters(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("inp,outp\n100,20\n200,30\n")
    base = {"trace": str(trace), "trace_format": "generic",
            "trace_options": {"columns": {"prompt": "inp", "output": "outp"}}}
    with pytest.raises(SpecError, match="applies to workload presets"):
        spec_of({"rate_per_s": [1.0]}, base=base)
    exp = expand(spec_of({"batch": [1, 2]}, base=base))
    assert not exp.invalid and len(exp.points) == 2
    wl = exp.points[0].config["workload"]
    assert wl["trace_format"] == "generic" and len(wl["trace_sha256"]) == 64


def test_derived_parameters_and_constraints():
    spec = spec_of({"groups.fc_pim.count": {"start": 10, "stop": 80, "step": 10},
                    "groups.attn.count": "90 - groups.fc_pim.count"},
                   constraints=["groups.attn.count >= 20"])
    exp = expand(spec)
    # fc 10..80 step 10 is 8 values; attn = 90 - fc >= 20 keeps fc <= 70: 7 points
    assert exp.excluded == 1 and len(exp.points) == 7
    for p in exp.points:
        assert p.params["groups.fc_pim.count"] + p.params["groups.attn.count"] == 90
        if p.valid:
            counts = {g["role"]: g["count"] for g in p.config["system"]["groups"]}
            assert counts["fc_pim"] + counts["attn"] == 90


# ------------------------------------------------------------------------------------------
# strategies


def test_grid_is_the_full_product_last_parameter_fastest():
    exp = expand(spec_of({"batch": [4, 8], "tlp": [1, 2, 3]}))
    assert [(p.params["batch"], p.params["tlp"]) for p in exp.points] == [
        (4, 1), (4, 2), (4, 3), (8, 1), (8, 2), (8, 3)]
    assert len({p.key for p in exp.points}) == 6
    assert [p.key for p in expand(spec_of({"batch": [4, 8], "tlp": [1, 2, 3]})).points] == \
        [p.key for p in exp.points]


def test_random_sampling_is_seeded_and_distinct_on_finite_spaces():
    params = {"batch": {"start": 1, "stop": 64, "step": 1}, "tlp": [1, 2, 3, 4],
              "alpha": {"dist": "loguniform", "low": 8, "high": 128}}

    def draw(seed: int, n: int = 12) -> list[tuple]:
        s = spec_of(params, strategy={"kind": "random", "samples": n, "seed": seed})
        return [tuple(p.params.values()) for p in expand(s).points]

    a, b, c = draw(0), draw(0), draw(1)
    assert a == b and a != c and len(a) == 12
    assert all(8 <= x[2] <= 128 and 1 <= x[0] <= 64 for x in a)
    # finite space of 4 values drawn 4 times without replacement: all of them
    s = spec_of({"tlp": [1, 2, 3, 4]}, strategy={"kind": "random", "samples": 4, "seed": 3})
    assert sorted(p.params["tlp"] for p in expand(s).points) == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------
# the store


def test_invalid_points_are_recorded_with_their_reason_and_not_rerun(tmp_path):
    spec = spec_of({"groups.fc_pim.count": [5, 30], "batch": [0, 8],
                    "groups.attn.device.banks_per_fpu": [2, 0]})
    res = run_sweep(spec, tmp_path, SerialExecutor())
    rows = {tuple(json.loads(r["params_json"]).values()): r for r in Store(tmp_path).rows()}
    assert len(rows) == 8 and res.summary.ran == 1 and res.summary.invalid == 7
    ok = rows[(30, 8, 2)]
    assert ok["status"] == "ok" and ok["throughput_tok_s"] > 0
    # 5 FC-PIM stacks of 12.9 GB hold 64 GB, not LLaMA-65B's 130.6 GB
    assert "130.6 GB of weights" in rows[(5, 8, 2)]["reason"]
    assert "batch" in rows[(30, 0, 2)]["reason"] and "greater than 0" in rows[(30, 0, 2)]["reason"]
    assert "banks_per_fpu" in rows[(30, 8, 0)]["reason"]
    assert all(r["status"] == "invalid" and "\n" not in r["reason"]
               for k, r in rows.items() if k != (30, 8, 2))
    again = run_sweep(spec, tmp_path, SerialExecutor(), resume=True)
    assert again.summary.ran == 0 and again.summary.stored_before == 8
    with pytest.raises(ConfigurationError, match="--resume"):
        run_sweep(spec, tmp_path, SerialExecutor())


def test_a_change_of_the_code_gives_new_keys_so_resume_reruns(tmp_path, monkeypatch):
    import importlib

    resolve = importlib.import_module("pimserve.experiments.sweep.resolve")
    spec = spec_of({"groups.fc_pim.count": [30], "batch": [4, 8]})
    run_sweep(spec, tmp_path / "s", SerialExecutor())
    monkeypatch.setattr(resolve, "code_fingerprint", lambda: "0" * 12)
    again = run_sweep(spec, tmp_path / "s", SerialExecutor(), resume=True)
    assert again.summary.stored_before == 0 and again.summary.ran == 2
    versions = {r["pimserve_version"] for r in Store(tmp_path / "s").rows()}
    assert len(versions) == 2 and f"{resolve.version()}" in versions
    # the fingerprint follows the files' content and paths, not compiled files
    tree = tmp_path / "pkg"
    (tree / "sub" / "__pycache__").mkdir(parents=True)
    (tree / "a.py").write_text("x = 1\n")
    (tree / "sub" / "p.yaml").write_text("k: 2\n")
    fp = resolve.tree_fingerprint(tree)
    (tree / "sub" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    assert resolve.tree_fingerprint(tree) == fp
    (tree / "sub" / "p.yaml").write_text("k: 3\n")
    assert resolve.tree_fingerprint(tree) != fp


def test_a_crashing_point_is_logged_not_stored_and_retried_on_resume(tmp_path, monkeypatch):
    import pimserve.experiments.sweep.runner as runner

    spec = spec_of({"tlp": [1, 2, 3]}, base={"n_requests": 4})
    real = runner.run_point

    def flaky(point, sweep=""):
        if point.params["tlp"] == 2:
            raise RuntimeError("boom")
        return real(point, sweep)

    monkeypatch.setattr(runner, "run_point", flaky)
    res = run_sweep(spec, tmp_path, SerialExecutor())
    store = Store(tmp_path)
    assert res.summary.ran == 2 and len(res.summary.errors) == 1
    assert "RuntimeError: boom" in res.summary.errors[0]
    assert store.count() == 2 and "boom" in store.errors()[0]["traceback"]
    monkeypatch.setattr(runner, "run_point", real)
    again = run_sweep(spec, tmp_path, SerialExecutor(), resume=True)
    assert again.summary.ran == 1 and store.count() == 3


KILL_SPEC = {
    "name": "kill",
    "base": {"system": "papi", "model": "llama-65b", "workload": "dolly-creative",
             "n_requests": 32},
    "parameters": {"groups.attn.link.bw_gbps": [16, 32, 64, 128, 256], "batch": [2, 4],
                   "tlp": [1, 2, 3, 4]},
}


def _stored(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT count(*) FROM points").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pimserve", "sweep", *args]


def test_sigkill_halfway_then_resume_stores_every_point_once_as_an_uninterrupted_run(
        tmp_path):
    spec_file = tmp_path / "kill.yaml"
    spec_file.write_text(yaml.safe_dump(KILL_SPEC, sort_keys=False))
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(str(spec_file), "--out", str(out), "--workers", "1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while _stored(out / "sweep.sqlite") < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    halfway = _stored(out / "sweep.sqlite")
    assert 12 <= halfway < 40, halfway
    con = sqlite3.connect(out / "sweep.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    # resume on a pool of 2: only the missing points run
    r = subprocess.run(_cli(str(spec_file), "--out", str(out), "--workers", "2", "--resume",
                            "--format", "json"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["stored_before"] == halfway and summary["ran"] == 40 - halfway
    store = Store(out, create=False)
    keys = [row["key"] for row in store.rows()]
    assert len(keys) == len(set(keys)) == 40
    # the same sweep uninterrupted, in this process: identical rows, bit for bit
    ref = tmp_path / "ref"
    run_sweep(sweep_spec_from_dict(KILL_SPEC), ref, SerialExecutor())
    assert results(store) == results(Store(ref))
    assert len(store.sweeps()) == 2  # the killed start and the resume


def test_two_sweeps_writing_one_store_at_once(tmp_path):
    out = tmp_path / "shared"
    specs = []
    for name, batches in (("a", [2, 4, 8]), ("b", [4, 8, 16])):
        d = {**KILL_SPEC, "name": name,
             "parameters": {"batch": batches, "tlp": [1, 2, 3, 4],
                            "groups.attn.link.bw_gbps": [32, 64]}}
        f = tmp_path / f"{name}.yaml"
        f.write_text(yaml.safe_dump(d, sort_keys=False))
        specs.append((f, d))
    procs = [subprocess.Popen(_cli(str(f), "--out", str(out), "--workers", "1", "--resume"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for f, _ in specs]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    store = Store(out, create=False)
    rows = store.rows()
    keys = [r["key"] for r in rows]
    # 24 points each, 16 shared (batch 4 and 8): 32 distinct, each once
    assert len(keys) == len(set(keys)) == 32
    con = sqlite3.connect(out / "sweep.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    # both really wrote (their time spans overlap) and every value is what one writer gives
    span = {n: [r["finished_at_s"] for r in rows if r["sweep"] == n] for n in "ab"}
    assert span["a"] and span["b"]
    assert min(span["a"]) < max(span["b"]) and min(span["b"]) < max(span["a"])
    ref = tmp_path / "ref"
    for _, d in specs:
        run_sweep(sweep_spec_from_dict(d), ref, SerialExecutor(), resume=True)
    assert results(store) == results(Store(ref))


def test_store_reads_with_pandas_and_exports_csv_and_parquet(tmp_path):
    spec = spec_of({"batch": [4, 8], "tlp": [1, 2]})
    run_sweep(spec, tmp_path, SerialExecutor())
    r = CliRunner().invoke(main, ["sweep", "export", str(tmp_path), "--csv"])
    assert r.exit_code == 0, r.output
    import csv

    with (tmp_path / "points.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {row["param.tlp"] for row in table} == {"1", "2"}
    assert all(float(row["throughput_tok_s"]) > 0 for row in table)
    pd = pytest.importorskip("pandas")
    con = sqlite3.connect(tmp_path / "sweep.sqlite")
    df = pd.read_sql("select * from points", con)
    con.close()
    assert len(df) == 4 and df["tpot_ms_p99"].notna().all()
    pytest.importorskip("pyarrow")
    r = CliRunner().invoke(main, ["sweep", "export", str(tmp_path), "--parquet"])
    assert r.exit_code == 0, r.output
    pq = pd.read_parquet(tmp_path / "points.parquet")
    assert sorted(pq["throughput_tok_s"]) == sorted(df["throughput_tok_s"])


# ------------------------------------------------------------------------------------------
# Pareto fronts and the report


def test_pareto_front_of_a_hand_made_set():
    # throughput (max), energy per token (min)
    pts = np.array([
        [10.0, 1.0],     # A: on the front
        [8.0, 0.5],      # B: on the front (least energy)
        [9.0, 2.0],      # C: A is faster and uses less
        [10.0, 1.0],     # D: equal to A: nothing dominates it
        [np.nan, 0.1],   # E: incomparable, never on the front
        [5.0, 0.5],      # F: B is as good on energy and faster
        [11.0, 3.0],     # G: fastest: on the front
    ])
    assert pareto_mask(pts, ["max", "min"]).tolist() == [True, True, False, True, False,
                                                         False, True]
    # three objectives: C beats A on the third, so it joins the front
    three = np.column_stack([pts[[0, 1, 2]], [5.0, 5.0, 1.0]])
    assert pareto_mask(three, ["max", "min", "min"]).tolist() == [True, True, True]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
                min_size=1, max_size=25))
def test_pareto_front_matches_the_definition(points):
    v = np.array(points, dtype=float)
    dirs = ["max", "min", "min"]
    s = v * np.array([-1, 1, 1])
    expect = [not any(np.all(s[j] <= s[i]) and np.any(s[j] < s[i]) for j in range(len(s)))
              for i in range(len(s))]
    assert pareto_mask(v, dirs).tolist() == expect


def test_report_on_a_hand_made_store_without_hardware_cost(tmp_path):
    store = Store(tmp_path)
    made = [  # key, x, throughput, energy/token, p99 TPOT
        ("a", 1, 100.0, 0.5, 20.0),   # best throughput: on the front
        ("b", 2, 50.0, 0.2, 30.0),    # least energy: on the front
        ("c", 3, 40.0, 0.6, 25.0),    # a beats it on all three
        ("d", 4, 60.0, 0.4, 10.0),    # least TPOT: on the front
    ]
    for key, x, t, e, tp in made:
        store.put({"key": key, "sweep": "h", "status": "ok", "param.x": x,
                   "throughput_tok_s": t, "energy_per_token_j": e, "tpot_ms_p99": tp,
                   "hw_note": "hardware cost not computed: no area model"})
    store.put({"key": "z", "sweep": "h", "status": "invalid", "reason": "does not fit",
               "param.x": 5})
    rep, _ = analyse(store)
    assert [o.name for o in rep.objectives] == ["throughput", "energy_per_token", "tpot_p99"]
    assert rep.skipped["hw_cost"] == "hardware cost not computed: no area model"
    assert sorted(f["key"] for f in rep.front) == ["a", "b", "d"]
    assert {b["objective"]: b["key"] for b in rep.best} == {
        "throughput": "a", "energy_per_token": "b", "tpot_p99": "d"}
    assert rep.invalid_reasons == {"does not fit": 1}
    assert not store.put({"key": "a", "sweep": "h2", "status": "ok"})  # stored once
    assert store.rows(["a"])[0]["sweep"] == "h"


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep-report")
    spec = spec_of({"batch": [4, 16], "tlp": [1, 2], "groups.attn.count": [30, 60],
                    "groups.fc_pim.count": [5, 30]})
    ex = PoolExecutor(2)
    run_sweep(spec, out, ex)
    return out


def test_report_best_points_front_and_pngs(small_store, tmp_path):
    store = Store(small_store, create=False)
    rep = write_report(store, tmp_path)
    ok = [r for r in store.rows() if r["status"] == "ok"]
    assert rep.valid == len(ok) == 8 and rep.invalid == 8
    best = {b["objective"]: b for b in rep.best}
    assert best["throughput"]["value"] == max(r["throughput_tok_s"] for r in ok)
    assert best["tpot_p99"]["value"] == min(r["tpot_ms_p99"] for r in ok)
    # no front point is dominated by any valid point
    names = [o.name for o in rep.objectives]
    cols = [o.column for o in rep.objectives]
    sign = np.array([-1 if o.direction == "max" else 1 for o in rep.objectives])
    allv = np.array([[r[c] for c in cols] for r in ok], dtype=float) * sign
    for f in rep.front:
        fv = np.array([f["objectives"][n] for n in names]) * sign
        assert not any(np.all(a <= fv) and np.any(a < fv) for a in allv)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    n_obj = len(rep.objectives)
    assert len([p for p in pngs if p.startswith("front_")]) == n_obj * (n_obj - 1) // 2
    assert {"effect_batch.png", "effect_tlp.png", "effect_groups_attn_count.png"} <= set(pngs)
    assert all((tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    with (tmp_path / "pareto.csv").open() as f:
        assert len(f.readlines()) == len(rep.front) + 1


def test_report_cli_with_chosen_objectives(small_store, tmp_path):
    r = CliRunner().invoke(main, ["sweep", "report", str(small_store), "--out", str(tmp_path),
                                  "--objectives", "throughput,energy_per_token",
                                  "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["objectives"] == ["throughput", "energy_per_token"]
    assert (tmp_path / "front_throughput_vs_energy_per_token.png").is_file()
    rep, _ = analyse(Store(small_store, create=False))
    assert len(data["front"]) <= rep.valid
    r = CliRunner().invoke(main, ["sweep", "report", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no sweep store" in r.output


# ------------------------------------------------------------------------------------------
# examples, optional executors and search


@pytest.mark.parametrize("name", ["sweep-papi-stack-budget", "sweep-pam-tiers",
                                  "sweep-alpha-batch-tlp"])
def test_examples_run_at_a_tiny_size(name, tmp_path):
    r = CliRunner().invoke(main, ["sweep", str(ROOT / "examples" / f"{name}.yaml"), "--out",
                                  str(tmp_path), "--limit", "3", "--n-requests", "4",
                                  "--workers", "1", "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["points"] == 3 and not data["errors"]
    rows = Store(tmp_path, create=False).rows()
    assert len(rows) == 3 and all(json.loads(r["config_json"] or "{}").get("workload", {})
                                  .get("n_requests") in (4, None) for r in rows)


def test_optuna_search_is_seeded_and_resumes_without_rerunning(tmp_path):
    pytest.importorskip("optuna")
    spec = sweep_spec_from_dict(
        yaml.safe_load((ROOT / "examples" / "sweep-papi-optuna.yaml").read_text()))
    spec = spec.with_base(n_requests=4)
    objs = ["throughput", "energy_per_token", "tpot_p99"]
    spec.objectives = [o for o in spec.objectives if o.name in objs]
    a = run_sweep(spec, tmp_path / "a", SerialExecutor(), limit=10)
    b = run_sweep(spec, tmp_path / "b", SerialExecutor(), limit=10)
    assert a.keys == b.keys and len(a.keys) == 10
    again = run_sweep(spec, tmp_path / "a", SerialExecutor(), limit=10, resume=True)
    assert again.keys == a.keys and again.summary.ran == 0
    fc = [json.loads(r["params_json"])["groups.fc_pim.count"] for r in Store(tmp_path / "a")
          .rows()]
    assert all(12 <= v <= 60 and v % 4 == 0 for v in fc)


def test_ray_gives_the_pool_s_results(tmp_path):
    pytest.importorskip("ray")
    from pimserve.experiments.sweep import RayExecutor

    spec = spec_of({"batch": [4, 8], "tlp": [1, 2]})
    exp = expand(spec)
    ex = RayExecutor("auto", 1)
    try:
        run_points(exp.points, Store(tmp_path / "ray"), ex, sweep="t")
    finally:
        ex.close()
    run_points(exp.points, Store(tmp_path / "serial"), SerialExecutor(), sweep="t")
    got = results(Store(tmp_path / "ray"))
    assert len(got) == 4 and got == results(Store(tmp_path / "serial"))
    assert all(math.isfinite(r["throughput_tok_s"]) for r in got.values())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_sweep_on_a_joined_token_authenticated_cluster_gives_the_pool_s_results(tmp_path):
    """``pimserve sweep --ray HOST:PORT`` joins a running head node (started as a user would,
    with token authentication, as Ray now defaults to) and stores the same rows as the local
    pool; without the token it is refused in one line that names RAY_AUTH_MODE."""
    pytest.importorskip("ray")
    import shutil

    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the ray command line is not installed")
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}
    temp = Path("/tmp") / f"rt{os.getpid()}"  # (Ray's socket paths must stay short)
    head = [ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
            "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}", "--block"]
    # its own process group, stopped below (not `ray stop`, which stops every cluster here)
    node = subprocess.Popen(head, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from pimserve.experiments.sweep.executors import _reachable

        deadline = time.monotonic() + 120
        while True:
            try:
                _reachable(f"127.0.0.1:{port}")
                break
            except ConfigurationError:
                assert node.poll() is None and time.monotonic() < deadline, "no head node"
                time.sleep(0.5)
        sweep = ["sweep", str(ROOT / "examples" / "sweep-papi-stack-budget.yaml"),
                 "--limit", "8", "--n-requests", "8", "--format", "json"]
        cli = [sys.executable, "-m", "pimserve.cli.main"]
        joined = subprocess.run(cli + sweep + ["--ray", f"127.0.0.1:{port}", "--out",
                                               str(tmp_path / "ray")],
                                env=env, capture_output=True, text=True, timeout=300)
        assert joined.returncode == 0, joined.stderr[-2000:]
        pool = subprocess.run(cli + sweep + ["--workers", "1", "--out", str(tmp_path / "pool")],
                              capture_output=True, text=True, timeout=300)
        assert pool.returncode == 0, pool.stderr[-2000:]
        got = results(Store(tmp_path / "ray"))
        assert sum(r["status"] == "ok" for r in got.values()) >= 4
        assert got == results(Store(tmp_path / "pool"))
        no_token = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        refused = subprocess.run(cli + sweep + ["--ray", f"127.0.0.1:{port}", "--out",
                                                str(tmp_path / "refused")],
                                 env=no_token | {"RAY_AUTH_MODE": "disabled"},
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0
        assert "Traceback" not in refused.stderr
        assert "RAY_AUTH_MODE=token" in refused.stderr
    finally:
        os.killpg(node.pid, signal.SIGKILL)  # the head node's processes, all in its group
        node.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_worker_with_other_code_stops_the_sweep_before_its_rows_are_stored(tmp_path):
    from pimserve.experiments.sweep.executors import Executor

    class OtherCode(Executor):  # a cluster node with another pimserve
        name = "ray"
        writes_in_workers = False
        workers = 1

        def run(self, chunks, sweep, store):
            from pimserve.experiments.sweep.runner import run_chunk

            for c in chunks:
                yield [r | {"pimserve_version": "0.0.9+000000000000"}
                       for r in run_chunk(list(c), sweep, None)]

    spec = spec_of({"groups.fc_pim.count": [30], "batch": [4]})
    with pytest.raises(ConfigurationError, match=r"worker runs pimserve 0\.0\.9.*same pimserve"):
        run_sweep(spec, tmp_path, OtherCode())
    assert Store(tmp_path).rows() == []


def test_a_ray_address_where_nothing_listens_fails_at_once_in_one_line():
    import socket

    from pimserve.experiments.sweep.executors import _reachable

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigurationError, match=f"nothing answers at 127.0.0.1:{port}"):
        _reachable(f"127.0.0.1:{port}")
    with pytest.raises(ConfigurationError, match="expected auto, host:port"):
        _reachable("head-node")
    with socket.socket() as srv:  # something listens: accepted
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        _reachable(f"ray://127.0.0.1:{srv.getsockname()[1]}")
