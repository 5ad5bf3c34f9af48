"""Fuzzing the loaders and the command line: any input is a result or a one-line error, never a
traceback. CI runs a few examples of each; ``PIMSERVE_FUZZ_EXAMPLES=5000 pytest
tests/test_fuzz.py`` runs a long pass."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pimserve.cli.main import main
from pimserve.errors import PimserveError
from pimserve.specs.catalog import load_device, load_model, load_system
from pimserve.workload import load_trace

N = int(os.environ.get("PIMSERVE_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=N, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

yaml_like = st.one_of(
    st.text(max_size=300),
    st.lists(st.tuples(st.sampled_from(["name", "groups", "kind", "count", "device", "role",
                                        "n_layers", "hidden_size", "dram", "peak_tflops",
                                        "tensor_parallel", "holds", "x"]),
                       st.one_of(st.integers(-10**30, 10**30), st.floats(), st.text(max_size=8),
                                 st.booleans(), st.none())),
             max_size=8).map(lambda kv: "\n".join(f"{k}: {v!r}" for k, v in kv)),
)


@FUZZ
@given(text=yaml_like, which=st.sampled_from(["system", "model", "device"]))
def test_yaml_loaders_never_raise_anything_but_pimserve_errors(tmp_path_factory, text, which):
    p = tmp_path_factory.mktemp("y") / "f.yaml"
    p.write_text(text)
    loader = {"system": load_system, "model": load_model, "device": load_device}[which]
    try:
        loader(str(p))
    except PimserveError as err:
        assert "\n" not in str(err)


csv_like = st.lists(
    st.lists(st.one_of(st.integers(-10**25, 10**25), st.floats(), st.text(max_size=6),
                       st.sampled_from(["", "nan", "inf", "2023-11-16 18:15:46.6805900"])),
             min_size=0, max_size=5),
    max_size=6,
).map(lambda rows: "\n".join(",".join(map(str, r)) for r in rows))


@FUZZ
@given(body=csv_like, fmt=st.sampled_from(["azure", "mooncake", "dolly", "arxiv"]),
       header=st.booleans())
def test_trace_loaders_never_raise_anything_but_pimserve_errors(tmp_path_factory, body, fmt,
                                                                header):
    heads = {"azure": "TIMESTAMP,ContextTokens,GeneratedTokens",
             "mooncake": "timestamp,input_length,output_length",
             "dolly": "category,prompt_tokens,output_tokens",
             "arxiv": "article_tokens,abstract_tokens"}
    p = tmp_path_factory.mktemp("t") / ("t.jsonl" if fmt == "mooncake" else "t.csv")
    p.write_text((heads[fmt] + "\n" if header else "") + body)
    try:
        load_trace(str(p), fmt)
    except PimserveError as err:
        assert "\n" not in str(err)


option_values = st.one_of(st.integers(-10**20, 10**20).map(str), st.floats().map(str),
                          st.text(min_size=1, max_size=8).filter(lambda s: not s.startswith("-")))


@FUZZ
@given(opt=st.sampled_from(["--batch", "--tlp", "--requests", "--rate", "--acceptance",
                            "--prefill-chunk", "--kv-block-tokens", "--seed", "--system",
                            "--model", "--workload", "--batching", "--max-iterations",
                            "--tpot-slo-ms", "--long-context"]),
       value=option_values)
def test_cli_options_give_a_result_or_a_one_line_error(opt, value):
    r = CliRunner().invoke(main, ["run", "--requests", "2", "--max-iterations", "20", opt,
                                  value, "--format", "json"])
    # 0: it ran; 2: a usage or PimserveError line; never an exception escaping
    assert r.exit_code in (0, 2), (opt, value, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), (opt, value, r.exception)
    assert "Traceback" not in r.output


@pytest.mark.parametrize("args", [["run", "--requests", "99999999999999999999999"],
                                  ["run", "--tlp", "99999999"],
                                  ["kernels", "--context", "99999999999999999999999"]])
def test_huge_integers_are_one_line_errors(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "Traceback" not in r.output
