"""Trace loaders: exact values on small fixtures, one-line errors with line numbers, real traces."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pimserve.errors import ConfigurationError, TraceError, UnknownNameError
from pimserve.workload import TRACE_LOADERS, load_trace, stored_stats

REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = [REPO.parent / "shared" / "traces", Path("/work/shared/traces")]
TRACES = next((p for p in _CANDIDATES if p.is_dir()), None)
needs_traces = pytest.mark.skipif(TRACES is None, reason="shared traces folder not present")

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- azure -------------------------------------------------------------------------------------


def test_azure_exact_values(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "a.csv",
        AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:16:46.6805901,1,1\n",
    )
    r = load_trace(p, "azure")
    # 50.9951690 - 46.6805900 = 4.3145790 s; 18:16:46.6805901 - 18:15:46.6805900 = 60 s + 100 ns
    assert r.arrival_s.tolist() == [0.0, 4.314579, 60.0000001]
    assert r.prompt_tokens.tolist() == [374, 396, 1]
    assert r.output_tokens.tolist() == [44, 109, 1]
    assert r.id.tolist() == [0, 1, 2]
    assert r.prefix_block_ids is None
    assert str(p) in r.source


def test_azure_timestamps_are_exact_across_midnight(tmp_path: Path) -> None:
    # 23:59:59.9999999 -> 00:00:00.0000001 next day = 200 ns; float parsing would lose it
    p = write(
        tmp_path,
        "m.csv",
        AZURE_HEADER + "2023-11-16 23:59:59.9999999,5,5\n2023-11-17 00:00:00.0000001,5,5\n",
    )
    assert load_trace(p, "azure").arrival_s.tolist() == [0.0, 2e-7]


def test_azure_skips_blank_lines_and_keeps_physical_line_numbers(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "b.csv",
        AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,44\n\n2023-11-16 18:15:47,3,x\n",
    )
    with pytest.raises(TraceError, match=r"line 4: GeneratedTokens"):
        load_trace(p, "azure")


GOOD = "2023-11-16 18:15:46.6805900,374,44\n"


T4 = "2023-11-16 18:15:50.0000000"
POS = "must be a positive integer"


@pytest.mark.parametrize(
    "bad_row, needle",
    [
        (f"{T4},396,abc", f"GeneratedTokens {POS} (got 'abc')"),
        (f"{T4},-5,10", f"ContextTokens {POS} (got '-5')"),
        (f"{T4},396,0", f"GeneratedTokens {POS} (got '0')"),
        (f"{T4},12.5,10", f"ContextTokens {POS} (got '12.5')"),
        (f"{T4},,10", f"ContextTokens {POS} (got '')"),
        (f"{T4},396", "expected 3 fields"),
        (f"{T4},396,1,7", "expected 3 fields"),
        ("yesterday,396,10", "TIMESTAMP must be a date-time like"),
        (",396,10", "TIMESTAMP must be a date-time like"),
        ("2023-11-16 18:15:40.0000000,396,10", "is earlier than the previous row's"),
    ],
)
def test_azure_bad_row_names_file_line_and_value(tmp_path: Path, bad_row: str, needle: str) -> None:
    # header = line 1, two good rows = lines 2-3, the bad row = line 4
    p = write(tmp_path, "x.csv", AZURE_HEADER + GOOD + GOOD + bad_row + "\n" + GOOD)
    with pytest.raises(TraceError) as exc:
        load_trace(p, "azure")
    msg = str(exc.value)
    assert msg.startswith(f"{p} line 4: "), msg
    assert needle in msg
    assert "\n" not in msg


def test_azure_sort_option_reorders(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "s.csv",
        AZURE_HEADER + "2023-11-16 18:15:50.0,2,2\n2023-11-16 18:15:46.0,1,1\n"
        "2023-11-16 18:15:48.5,3,3\n",
    )
    r = load_trace(p, "azure", sort=True)
    assert r.arrival_s.tolist() == [0.0, 2.5, 4.0]
    assert r.prompt_tokens.tolist() == [1, 3, 2]
    assert r.id.tolist() == [1, 2, 0]  # ids are the data rows' positions in the file


def test_header_mismatch_names_expected_and_found(tmp_path: Path) -> None:
    p = write(tmp_path, "h.csv", "time,ctx,GeneratedTokens\n2023-11-16 18:15:46,3,4\n")
    with pytest.raises(TraceError) as exc:
        load_trace(p, "azure")
    msg = str(exc.value)
    assert "line 1" in msg and "lacks column(s) TIMESTAMP, ContextTokens" in msg
    assert "expected TIMESTAMP,ContextTokens,GeneratedTokens" in msg
    assert "found time,ctx,GeneratedTokens" in msg


@pytest.mark.parametrize("text", ["", "\n\n  \n", AZURE_HEADER, AZURE_HEADER + "\n\n"])
def test_empty_trace_is_an_error(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, "e.csv", text)
    with pytest.raises(TraceError, match=re.escape(f"trace {p} has no requests")):
        load_trace(p, "azure")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="not found"):
        load_trace(tmp_path / "nope.csv", "azure")
    with pytest.raises(TraceError, match="is a directory"):
        load_trace(tmp_path, "azure")


def test_non_utf8_names_line(tmp_path: Path) -> None:
    p = tmp_path / "bin.csv"
    p.write_bytes(AZURE_HEADER.encode() + GOOD.encode() + b"\xff\xfe,1,1\n")
    with pytest.raises(TraceError, match="line 3: not UTF-8"):
        load_trace(p, "azure")


def test_unknown_format_and_option(tmp_path: Path) -> None:
    p = write(tmp_path, "a.csv", AZURE_HEADER + GOOD)
    with pytest.raises(
        UnknownNameError, match=r"unknown trace format 'azur'.*did you mean 'azure'"
    ):
        load_trace(p, "azur")
    with pytest.raises(ConfigurationError, match=r"has no option 'category'.*accepted: sort"):
        load_trace(p, "azure", category="x")
    assert set(TRACE_LOADERS.names()) == {"azure", "mooncake", "dolly", "arxiv", "generic"}


# -- mooncake ----------------------------------------------------------------------------------


def mooncake_line(ts: object = 0, i: object = 10, o: object = 5, h: object = (0,)) -> str:
    rec = {"timestamp": ts, "input_length": i, "output_length": o, "hash_ids": list(h)}
    if isinstance(h, str):
        rec["hash_ids"] = h
    return json.dumps(rec)


def test_mooncake_exact_values(tmp_path: Path) -> None:
    text = "\n".join(
        [
            mooncake_line(1000, 1024, 10, (0, 1)),
            mooncake_line(2500, 600, 5, (0, 2)),
            "",
            mooncake_line(2500, 7, 1, ()),
        ]
    )
    r = load_trace(write(tmp_path, "m.jsonl", text + "\n"), "mooncake")
    # timestamps are ms: (2500 - 1000) ms = 1.5 s
    assert r.arrival_s.tolist() == [0.0, 1.5, 1.5]
    assert r.prompt_tokens.tolist() == [1024, 600, 7]
    assert r.output_tokens.tolist() == [10, 5, 1]
    assert r.prefix_block_ids == [(0, 1), (0, 2), ()]
    assert r[1].prefix_block_ids == (0, 2)


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"timestamp": 5, "input_length": 3, "hash_ids": []}', "missing field 'output_length'"),
        (mooncake_line(5, 3, 0), "output_length must be a positive integer (got 0)"),
        (mooncake_line(5, -3, 1), "input_length must be a positive integer (got -3)"),
        (mooncake_line(5, "abc", 1), "input_length must be a positive integer (got 'abc')"),
        (mooncake_line("soon", 3, 1), "timestamp must be a finite number of milliseconds"),
        (mooncake_line(5, 3, 1, "x"), "hash_ids must be a list of integers"),
        (mooncake_line(1, 3, 1), "is earlier than the previous row's"),
    ],
)
def test_mooncake_bad_line(tmp_path: Path, bad: str, needle: str) -> None:
    text = mooncake_line(2) + "\n" + mooncake_line(3) + "\n" + bad + "\n"
    p = write(tmp_path, "m.jsonl", text)
    with pytest.raises(TraceError) as exc:
        load_trace(p, "mooncake")
    assert str(exc.value).startswith(f"{p} line 3: ")
    assert needle in str(exc.value)


def test_mooncake_empty(tmp_path: Path) -> None:
    p = write(tmp_path, "m.jsonl", "")
    with pytest.raises(TraceError, match="has no requests"):
        load_trace(p, "mooncake")


# -- dolly / arxiv ----------------------------------------------------------------------------

DOLLY = "category,lin,lout\nopen_qa,10,24\ncreative_writing,7,300\nopen_qa,24,8\n"


def test_dolly_exact_values_and_category_filter(tmp_path: Path) -> None:
    p = write(tmp_path, "d.csv", DOLLY)
    r = load_trace(p, "dolly")
    assert r.prompt_tokens.tolist() == [10, 7, 24]
    assert r.output_tokens.tolist() == [24, 300, 8]
    assert r.arrival_s.tolist() == [0.0, 0.0, 0.0]
    qa = load_trace(p, "dolly", category="open_qa")
    assert qa.prompt_tokens.tolist() == [10, 24] and qa.id.tolist() == [0, 2]
    both = load_trace(p, "dolly", category=["open_qa", "creative_writing"])
    assert len(both) == 3
    with pytest.raises(TraceError, match=r"no requests with category brainstorming.*open_qa"):
        load_trace(p, "dolly", category="brainstorming")


def test_dolly_bad_row_in_unselected_category_is_ignored(tmp_path: Path) -> None:
    p = write(tmp_path, "d.csv", DOLLY + "open_qa,5,0\n")
    assert len(load_trace(p, "dolly", category="creative_writing")) == 1
    with pytest.raises(TraceError, match=r"line 5: lout must be a positive integer \(got '0'\)"):
        load_trace(p, "dolly", category="open_qa")


def test_arxiv_exact_values_and_bad_row(tmp_path: Path) -> None:
    head = "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n"
    p = write(tmp_path, "x.csv", head + "3772,54,3826,69.85\n2015,156,2171,12.9\n")
    r = load_trace(p, "arxiv")
    assert r.prompt_tokens.tolist() == [3772, 2015]
    assert r.output_tokens.tolist() == [54, 156]
    q = write(tmp_path, "y.csv", head + "3772,54,3826,69.85\n2015,0,2015,inf\n")
    with pytest.raises(TraceError, match=r"y.csv line 3: num_decode_tokens .* \(got '0'\)"):
        load_trace(q, "arxiv")
    with pytest.raises(TraceError, match="expected num_prefill_tokens,num_decode_tokens"):
        load_trace(write(tmp_path, "z.csv", "lin,lout\n1,2\n"), "arxiv")


# -- generic -----------------------------------------------------------------------------------

COLS = {"arrival": "t", "prompt": "in", "output": "out"}


def test_generic_csv_ms_and_jsonl_s(tmp_path: Path) -> None:
    p = write(tmp_path, "g.csv", "t,in,out,extra\n1000,5,6,x\n1250,7,8,y\n")
    r = load_trace(p, "generic", columns=COLS, time_unit="ms")
    assert r.arrival_s.tolist() == [0.0, 0.25]  # (1250 - 1000) ms
    assert r.prompt_tokens.tolist() == [5, 7] and r.output_tokens.tolist() == [6, 8]
    j = write(tmp_path, "g.jsonl", '{"t": 2.5, "in": 5, "out": 6}\n{"t": 4, "in": 7, "out": 8}\n')
    r = load_trace(j, "generic", columns=COLS, time_unit="s")
    assert r.arrival_s.tolist() == [0.0, 1.5]
    nt = load_trace(p, "generic", columns={"prompt": "in", "output": "out"})
    assert nt.arrival_s.tolist() == [0.0, 0.0]


def test_generic_configuration_errors(tmp_path: Path) -> None:
    p = write(tmp_path, "g.csv", "t,in,out\n1,5,6\n")
    with pytest.raises(ConfigurationError, match="time_unit must be one of 's', 'ms'"):
        load_trace(p, "generic", columns=COLS)
    with pytest.raises(ConfigurationError, match=r"unknown key.*lengths.*accepted: arrival"):
        load_trace(p, "generic", columns={**COLS, "lengths": "x"}, time_unit="s")
    with pytest.raises(ConfigurationError, match="must map 'output'"):
        load_trace(p, "generic", columns={"prompt": "in"})
    with pytest.raises(ConfigurationError, match="file_format must be 'csv' or 'jsonl'"):
        load_trace(p, "generic", columns=COLS, time_unit="s", file_format="parquet")
    with pytest.raises(TraceError, match=r"lacks column.*found t,in,out"):
        load_trace(p, "generic", columns={**COLS, "prompt": "prompt_len"}, time_unit="s")


def test_generic_bad_values_name_line(tmp_path: Path) -> None:
    p = write(tmp_path, "g.csv", "t,in,out\n1,5,6\n2,5,6\nnan,5,6\n")
    msg = r"line 4: t must be a finite number of seconds \(got 'nan'\)"
    with pytest.raises(TraceError, match=msg):
        load_trace(p, "generic", columns=COLS, time_unit="s")
    j = write(tmp_path, "g.jsonl", '{"t": 1, "in": 5, "out": 6}\n{"t": 2, "in": 5}\n')
    with pytest.raises(TraceError, match=r"line 2: missing field 'out' \(found: t, in\)"):
        load_trace(j, "generic", columns=COLS, time_unit="s")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**6),  # gap in ms
            st.integers(1, 10**6),  # prompt tokens
            st.integers(1, 10**5),  # output tokens
        ),
        min_size=1,
        max_size=30,
    )
)
def test_generic_round_trip(tmp_path_factory: pytest.TempPathFactory, rows: list) -> None:
    """Whatever valid table we write, the loader reads back exactly (ms -> s, rebased)."""
    t = np.cumsum([g for g, _, _ in rows]) + 12345
    lines = ["t,in,out"] + [f"{ti},{a},{b}" for ti, (_, a, b) in zip(t, rows, strict=True)]
    p = tmp_path_factory.mktemp("rt") / "g.csv"
    p.write_text("\n".join(lines) + "\n")
    r = load_trace(p, "generic", columns=COLS, time_unit="ms")
    assert r.prompt_tokens.tolist() == [a for _, a, _ in rows]
    assert r.output_tokens.tolist() == [b for _, _, b in rows]
    np.testing.assert_allclose(r.arrival_s, (t - t[0]) / 1e3, rtol=0, atol=1e-9)


# -- the real traces ---------------------------------------------------------------------------


@needs_traces
def test_real_azure_conv() -> None:
    assert TRACES is not None
    t0 = time.perf_counter()
    r = load_trace(TRACES / "azure_llm_2023_conv.csv", "azure")
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, f"loading took {elapsed:.2f} s"
    s = r.stats()
    assert len(r) == 19_366
    assert s["input_mean"] == pytest.approx(1154.7, abs=0.1)
    assert (s["input_p50"], s["input_p99"], s["input_max"]) == (1020, 4142, 14050)
    assert s["output_mean"] == pytest.approx(211.1, abs=0.1)
    assert (s["output_p50"], s["output_max"]) == (129, 1000)
    assert s["duration_s"] == pytest.approx(3502, abs=1)
    assert s["rate_per_s"] == pytest.approx(5.53, abs=0.005)
    assert s["interarrival_cv"] == pytest.approx(1.09, abs=0.01)


@needs_traces
def test_real_azure_code() -> None:
    assert TRACES is not None
    s = load_trace(TRACES / "azure_llm_2023_code.csv", "azure").stats()
    assert s["n"] == 8_819
    assert s["input_mean"] == pytest.approx(2047.8, abs=0.1)
    assert s["output_mean"] == pytest.approx(27.9, abs=0.05)
    assert s["duration_s"] == pytest.approx(3436, abs=1)
    assert s["rate_per_s"] == pytest.approx(2.57, abs=0.005)
    assert s["interarrival_cv"] == pytest.approx(13.2, abs=0.05)


@needs_traces
def test_real_dolly_and_arxiv() -> None:
    assert TRACES is not None
    cw = load_trace(TRACES / "dolly_lengths_gpt2.csv", "dolly", category="creative_writing")
    qa = load_trace(TRACES / "dolly_lengths_gpt2.csv", "dolly", category="open_qa")
    assert (len(cw), len(qa)) == (709, 3_742)
    assert cw.stats()["input_mean"] == pytest.approx(18.9, abs=0.05)
    assert cw.stats()["output_mean"] == pytest.approx(221.8, abs=0.05)
    assert (cw.stats()["input_max"], cw.stats()["output_max"]) == (178, 2091)
    assert qa.stats()["output_mean"] == pytest.approx(64.1, abs=0.05)
    ax = load_trace(TRACES / "arxiv_summarization_lengths_llama2.csv", "arxiv")
    s = ax.stats()
    assert len(ax) == 28_257
    assert s["input_mean"] == pytest.approx(2588, abs=0.5)
    assert (s["input_p50"], s["input_max"]) == (2730, 4054)
    assert s["output_mean"] == pytest.approx(291, abs=0.5)
    assert (s["output_p50"], s["output_max"]) == (167, 4056)


@needs_traces
@pytest.mark.parametrize(
    "key, file, fmt, opts",
    [
        ("azure-conv", "azure_llm_2023_conv.csv", "azure", {}),
        ("azure-code", "azure_llm_2023_code.csv", "azure", {}),
        ("dolly-creative", "dolly_lengths_gpt2.csv", "dolly", {"category": "creative_writing"}),
        ("dolly-open-qa", "dolly_lengths_gpt2.csv", "dolly", {"category": "open_qa"}),
        ("arxiv-sum", "arxiv_summarization_lengths_llama2.csv", "arxiv", {}),
    ],
)
def test_stored_statistics_match_the_traces(key: str, file: str, fmt: str, opts: dict) -> None:
    """data/length_quantiles.json is not stale: rerun scripts/fit_workloads.py if this fails."""
    assert TRACES is not None
    s = load_trace(TRACES / file, fmt, **opts).stats()
    stored = stored_stats(key)
    assert stored["n"] == s["n"]
    for side, pre in (("prompt", "input"), ("output", "output")):
        for q in ("mean", "p50", "p90", "p99", "max"):
            assert stored[f"{side}_{q}"] == pytest.approx(s[f"{pre}_{q}"], rel=1e-12)
