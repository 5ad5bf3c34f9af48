"""The public Python API and ``python -m pimserve``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pimserve
from pimserve.errors import ConfigurationError


def test_dir_shows_the_public_api():
    names = set(dir(pimserve))
    assert {"simulate", "load_system", "load_model", "load_workload", "RunResult",
            "RunConfig"} <= names
    assert callable(pimserve.simulate) and pimserve.RunResult.__name__ == "RunResult"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "pimserve", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "validate" in out.stdout and "reproduce" in out.stdout


@pytest.mark.parametrize("bad", [0, -1, 10**8, True])
def test_calibrate_max_parallelism_is_bounded(bad):
    from pimserve.engine.calibration import calibrate_alpha

    with pytest.raises(ConfigurationError, match="max_parallelism"):
        calibrate_alpha("papi", "llama-65b", bad)


@pytest.mark.parametrize(("args", "msg"), [
    (["--out", "/nonexistent-folder/r.json"], "does not exist"),
    (["--out", "/dev/full"], "pseudo-file"),
    (["--out", "/proc/version"], "pseudo-file"),
])
def test_run_refuses_unwritable_outputs_before_running(args, msg):
    from click.testing import CliRunner

    from pimserve.cli.main import main

    r = CliRunner().invoke(main, ["run", "--requests", "2", *args])
    assert r.exit_code != 0 and msg in r.output and "Traceback" not in r.output


def test_out_and_timeline_on_one_file_is_refused(tmp_path):
    from click.testing import CliRunner

    from pimserve.cli.main import main

    f = str(tmp_path / "same.json")
    for cmd in (["run"], ["compare", "--systems", "papi,gpu-only"]):
        r = CliRunner().invoke(main, [*cmd, "--requests", "2", "--out", f, "--timeline", f])
        assert r.exit_code != 0 and "name the same file" in r.output


def test_silent_misconfigurations_are_refused():
    from pimserve import simulate
    from pimserve.errors import PimserveError
    from pimserve.specs.catalog import load_model, load_system
    from pimserve.specs.model import ModelSpec
    from pimserve.specs.system import SystemSpec

    # tensor parallelism over more GPUs than the system has
    d = load_system("gpu-only").model_dump()
    d["groups"][0]["count"], d["tensor_parallel"] = 2, 8
    with pytest.raises(ValueError, match=r"tensor_parallel \(8\) exceeds the gpu group's count"):
        SystemSpec.model_validate(d)
    # dtype_bytes: true is not 1
    m = load_model("llama3-8b").model_dump()
    m["dtype_bytes"] = True
    with pytest.raises(ValueError, match="dtype_bytes"):
        ModelSpec.model_validate(m)
    # PAM options on a system without KV tiers, alpha without PAPI's placement
    with pytest.raises(PimserveError, match="kv_x set PAM's KV hierarchy"):
        simulate("papi", "llama-65b", "dolly-creative", n_requests=2, kv_x=3.0)
    with pytest.raises(PimserveError, match="alpha is PAPI's FC placement threshold"):
        simulate("gpu-only", "llama-65b", "dolly-creative", n_requests=2, alpha=4.0)
    # dynamic speculation starting above its own bound
    with pytest.raises(PimserveError, match="tlp_max"):
        simulate("papi", "llama-65b", "dolly-creative", n_requests=2, speculation="dynamic",
                 tlp=9, tlp_max=4)


@pytest.mark.parametrize("value", [1e300, float("inf"), float("nan")])
def test_absurd_or_non_finite_device_numbers_are_refused(value):
    from pimserve.errors import SpecError
    from pimserve.specs.base import validate
    from pimserve.specs.catalog import load_device
    from pimserve.specs.devices import GPUSpec

    d = load_device("a100").model_dump()
    d["hbm_capacity_gb"] = value
    with pytest.raises(SpecError, match="hbm_capacity_gb"):
        validate(GPUSpec, d, "my-gpu.yaml")


def test_truncation_that_cannot_fit_says_so():
    import numpy as np

    from pimserve import simulate
    from pimserve.workload.request import Requests

    req = Requests(id=np.arange(2), arrival_s=np.zeros(2), prompt_tokens=np.array([100, 100]),
                   output_tokens=np.array([10, 5000]))
    r = simulate("gpu-only", "llama-65b", req, long_context="truncate")
    assert r.rejected_reasons == {"output_exceeds_context": 1}
    assert any("no prompt truncation fits" in w for w in r.warnings)


def test_compare_labels_a_yaml_system_by_its_name(tmp_path):
    import json

    from click.testing import CliRunner

    from pimserve.cli.main import main

    y = tmp_path / "file-name.yaml"
    y.write_text("name: my-gpus\ngroups:\n  - role: gpu\n    device: a100\n    count: 4\n"
                 "    holds: [weights, kv]\ntensor_parallel: 4\n")
    r = CliRunner().invoke(main, ["compare", "--systems", f"gpu-only,{y}", "--requests", "2",
                                  "--format", "json"])
    assert r.exit_code == 0, r.output
    runs = json.loads(r.output)["runs"]
    assert [x["system"] for x in runs] == ["gpu-only", "my-gpus"]
    assert runs[1]["given_as"] == str(y)


def test_reproduction_scratch_folder_is_removed():
    from pimserve.experiments.reproduce import common

    p = common._scratch()
    assert p.is_dir()
    common._drop_scratch()
    assert not p.exists() and common._SCRATCH is None


def test_unknown_field_inside_a_group_lists_the_groups_fields():
    from pimserve.errors import SpecError
    from pimserve.specs.base import validate
    from pimserve.specs.system import SystemSpec

    d = {"name": "x", "groups": [{"role": "gpu", "device": "a100", "count": 1,
                                   "holds": ["weights", "kv"], "colour": "red"}]}
    with pytest.raises(SpecError) as e:
        validate(SystemSpec, d, "x.yaml")
    assert "groups.0.colour" in str(e.value) and "accepted: role, device, count" in str(e.value)


def test_device_files_resolve_against_the_system_files_folder(tmp_path, monkeypatch):
    import yaml

    from pimserve.specs.catalog import load_device, load_system

    sub = tmp_path / "sub"
    sub.mkdir()
    dev = load_device("a100").model_dump(mode="json")
    dev["name"] = "my-a100"
    (sub / "my-a100.yaml").write_text(yaml.safe_dump(dev))
    (sub / "sys.yaml").write_text("name: rel\ngroups:\n  - role: gpu\n    device: my-a100.yaml\n"
                                  "    count: 2\n    holds: [weights, kv]\ntensor_parallel: 2\n")
    monkeypatch.chdir(tmp_path)  # the device file is not in the working directory
    s = load_system("sub/sys.yaml")
    assert load_device(s.groups[0].device).name == "my-a100"


def test_generic_trace_from_the_command_line(tmp_path):
    import json

    from click.testing import CliRunner

    from pimserve.cli.main import main

    f = tmp_path / "t.csv"
    f.write_text("ts,in,out\n1.0,200,30\n0.0,100,20\n")  # out of order
    base = ["run", "--trace", str(f), "--trace-format", "generic"]
    r = CliRunner().invoke(main, base)
    assert r.exit_code != 0 and "needs --trace-columns" in r.output
    cols = ["--trace-columns", "arrival=ts,prompt=in,output=out", "--time-unit", "s"]
    r = CliRunner().invoke(main, [*base, *cols])
    assert r.exit_code != 0 and "time order" in r.output
    r = CliRunner().invoke(main, [*base, *cols, "--trace-sort", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["requests_completed"] == 2
    r = CliRunner().invoke(main, ["run", "--trace-columns", "prompt=in"])
    assert r.exit_code != 0 and "for --trace-format generic" in r.output


def test_numbers_print_without_exponents_and_names_are_not_cut():
    import io

    from rich.console import Console

    import pimserve.report.console as c

    assert c.fmt(42720.3) == "42,720.3" and c.fmt(1e7) == "10,000,000"
    assert c.fmt(12.3456) == "12.35" and c.fmt(0.000123) == "0.000123"
    buf = io.StringIO()
    old = c.console
    c.console = Console(width=80, file=buf)
    try:
        c.print_table("t", ["system", *[f"metric {i}" for i in range(9)]],
                      [["a100-attacc", *[1.5] * 9], ["a100-hbmpim", *[2.5] * 9]])
    finally:
        c.console = old
    out = buf.getvalue()
    assert "a100-attacc" in out and "a100-hbmpim" in out


def test_slo_attainment_and_goodput():
    from pimserve import simulate

    kw = dict(n_requests=100, seed=0)
    loose = simulate("papi", "llama2-70b", "azure-conv", ttft_slo_ms=1e9, tpot_slo_ms=1e9, **kw)
    # every completed request meets a loose SLO; the 15 rejected ones (context) count as misses
    assert loose.requests_rejected == 15
    assert loose.slo_attainment == pytest.approx(loose.requests_completed / 100)
    assert loose.goodput_tok_s == pytest.approx(loose.throughput_tok_s)
    none = simulate("papi", "llama2-70b", "azure-conv", tpot_slo_ms=1e-6, **kw)
    assert none.slo_attainment == 0.0 and none.goodput_req_s == 0.0
    p50 = loose.tpot_ms["p50"]
    mid = simulate("papi", "llama2-70b", "azure-conv", tpot_slo_ms=p50, **kw)
    assert 0.0 < mid.slo_attainment < loose.slo_attainment
    assert simulate("papi", "llama2-70b", "azure-conv", **kw).slo_attainment is None


def test_calibrate_pam_defaults_to_pams_model(monkeypatch):
    from click.testing import CliRunner

    import pimserve.experiments.calibration as cal
    from pimserve.cli.main import main

    seen = {}

    def fake_xy(spec, model):
        seen["model"] = model
        raise cal.ConfigurationError("stop here")

    monkeypatch.setattr(cal, "calibrate_xy", fake_xy)
    r = CliRunner().invoke(main, ["calibrate", "--system", "pam"])
    assert r.exit_code != 0 and seen["model"] == "llama3-70b"


def test_alpha_belongs_to_the_system_and_model_it_was_calibrated_for(tmp_path):
    import yaml

    from pimserve import simulate
    from pimserve.engine.calibration import calibrate_alpha
    from pimserve.specs.catalog import load_system

    d = load_system("papi").model_dump(mode="json")
    d["name"] = "my-papi"
    for g in d["groups"]:
        if g["role"] == "fc_pim":
            g["count"] = 20  # fewer FC-PIM stacks: FC-PIM loses earlier
    f = tmp_path / "my-papi.yaml"
    f.write_text(yaml.safe_dump(d))
    r = simulate(str(f), "llama-65b", "dolly-creative", n_requests=2)
    own = calibrate_alpha(load_system(str(f)), "llama-65b").alpha
    assert own != 48.0 and r.config["alpha"] == own
    assert any("recalibrated for my-papi" in w for w in r.warnings)
    # the preset itself, or a renamed copy with the same devices, keeps its alpha silently
    same = simulate("papi", "llama-65b", "dolly-creative", n_requests=2)
    assert same.config["alpha"] == 48.0 and not any("recalibrated" in w for w in same.warnings)
    # an alpha given for the run is the user's: never replaced
    mine = simulate(str(f), "llama-65b", "dolly-creative", n_requests=2, alpha=7.0)
    assert mine.config["alpha"] == 7.0


@pytest.mark.parametrize("folder", ["/proc/pimserve-out", "/dev/full"])
def test_reproduce_and_plot_refuse_pseudo_filesystems_before_running(folder, tmp_path):
    from click.testing import CliRunner

    from pimserve.cli.main import main

    r = CliRunner().invoke(main, ["reproduce", "papi", "--quick", "--out", folder])
    assert r.exit_code == 2 and "pseudo-filesystem" in r.output
    res = tmp_path / "r.json"
    CliRunner().invoke(main, ["run", "--requests", "2", "--out", str(res)])
    r = CliRunner().invoke(main, ["plot", str(res), "--out", folder])
    assert r.exit_code == 2 and "pseudo-filesystem" in r.output


@pytest.mark.parametrize("cmd", ["devices", "systems", "workloads", "models"])
def test_listings_do_not_point_at_files_a_clone_lacks(cmd):
    from click.testing import CliRunner

    from pimserve.cli.main import main

    out = CliRunner().invoke(main, [cmd, "--format", "json"]).output
    assert "facts/" not in out and "shared/" not in out
