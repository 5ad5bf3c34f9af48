"""Timelines: a run's iterations as a Perfetto / Chrome trace (trace-event JSON).

The engine records, for the iterations of ``RunConfig.timeline_steps``, the schedule it priced
(``RunResult.extra["timeline"]``, plain data; see ``Simulator._timeline``). This module turns
that record into the trace-event "JSON Object format" that https://ui.perfetto.dev and
``chrome://tracing`` open: ``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData":
{...}}`` with one ``"X"`` (complete) event per slice, ``ts`` and ``dur`` in microseconds of
simulated time, and ``"M"`` (metadata) events naming the process and each track.

Tracks (one thread each, in this order): ``Iterations`` (one slice per iteration, with its
RLP, TLP and prefill work), then one per device group (GPU, FC-PIM, Attn-PIM, or each KV tier
of a PAM system), then the links (FC side <-> attention transfers, tensor-parallel all-reduce,
KV writes to lower tiers, KV fetches of offloaded tiers, KV migration between tiers).

Within an iteration slices are laid out as the engine prices it: the parts it adds up run one
after another (draft, then for each decoder layer QKV -> Q/K/V transfer -> attention -> prefill
attention -> KV write -> output transfer -> output projection -> all-reduce -> FFN or experts
-> all-reduce, then the LM head, exposed KV fetches and KV writes to lower tiers), and the parts
it overlaps run side by side: the KV tiers' attention, each followed by its partial results'
transfer to the merging device (``partials``; the layer waits for the slowest tier, then
``attention-reduction`` is PAMattention's inter-device reduction), an offloaded tier's
``kv-fetch`` alongside the GPU's attention, and KV migration (from the iteration's start; the
iteration lasts at least as long). FC kernels on the GPU and on FC-PIM
are priced one after another (each placement group on one side), and drawn so.

``detail``: ``"phases"`` (default) draws each phase once per iteration, summed over the
model's identical decoder layers (a slice's ``args.layers`` and ``args.per_layer_us`` say so),
which keeps traces small; ``"layers"`` repeats the layer's slices once per decoder layer
(about ``10 x n_layers`` slices per iteration: use it on short windows).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pimserve.errors import ConfigurationError

Detail = Literal["phases", "layers"]

def _category(track: str, name: str) -> str:
    """The slice's ``cat``: iteration, link, other (the draft model), norms (layer norms and
    activation), attention or fc."""
    if track == "iteration":
        return "iteration"
    if track.startswith("link:"):
        return "link"
    if name == "draft":
        return "other"
    if name == "norms+activation":
        return "norms"
    return "attention" if "attention" in name else "fc"


def _record(result: Any) -> dict[str, Any]:
    """The timeline record of a RunResult (or of its dict / JSON form)."""
    extra = result.get("extra", {}) if isinstance(result, dict) else getattr(result, "extra", {})
    tl = (extra or {}).get("timeline")
    if not isinstance(tl, dict) or "iterations" not in tl:
        raise ConfigurationError(
            "the result has no timeline: run it with timeline_steps=(A, B) "
            "(`pimserve run --timeline PATH [--timeline-steps A:B]`)"
        )
    return tl


def timeline_slices(
    result: Any, detail: Detail = "phases"
) -> tuple[dict[str, str], list[tuple[str, str, float, float, dict[str, Any]]]]:
    """(track id -> name, slices) of a run's timeline; a slice is ``(track, name, start s,
    end s, args)`` in simulated seconds. Slices of one iteration lie within
    ``[start_s, start_s + time_s]`` of the iteration (the first slice of each iteration is the
    iteration itself, on the ``iteration`` track)."""
    if detail not in ("phases", "layers"):
        raise ConfigurationError(f"timeline detail must be phases or layers (got '{detail}')")
    tl = _record(result)
    tracks: dict[str, str] = dict(tl.get("tracks", {}))
    tracks.setdefault("iteration", "Iterations")
    L = int(tl.get("n_layers", 1))
    out: list[tuple[str, str, float, float, dict[str, Any]]] = []
    for it in tl["iterations"]:
        t0, dt = float(it["start_s"]), float(it["time_s"])
        common = {"iteration": it["index"], "rlp": it["rlp"], "tlp": it["tlp"]}
        mine: list[tuple[str, str, float, float, dict[str, Any]]] = []
        mine.append(("iteration", f"iteration {it['index']}", t0, t0 + dt,
                    {**common, "prefill_requests": it.get("prefill_requests", 0),
                     "prefill_tokens": it.get("prefill_tokens", 0), "time_ms": dt * 1e3}))
        base = t0 + float(it["layers_start_s"])
        period = float(it["layer_s"])
        for track, name, off, dur, args in it["layer"]:
            if detail == "phases":
                # L alike layers, each phase's L instances drawn as one slice
                mine.append((track, name, base + off * L, base + (off + dur) * L,
                            {**common, **args, "layers": L, "per_layer_us": dur * 1e6}))
            else:
                for layer in range(L):
                    s = base + layer * period
                    mine.append((track, name, s + off, s + (off + dur),
                                {**common, **args, "layer": layer}))
        for track, name, off, dur, args in it["slices"]:
            mine.append((track, name, t0 + off, t0 + (off + dur), {**common, **args}))
        # in time order, the iteration's own slice first
        mine.sort(key=lambda x: (x[2], x[0] != "iteration"))
        out.extend(mine)
    return tracks, out


def _us(t_s: float) -> float:
    """Seconds to microseconds, rounded to the nanosecond (keeps files small)."""
    return round(t_s * 1e6, 3)


def trace_events(result: Any, detail: Detail = "phases", pid: int = 1) -> dict[str, Any]:
    """The run's timeline as a trace-event JSON object (``traceEvents``, ``displayTimeUnit``,
    ``otherData``): ``X`` events with ``ts``/``dur`` in microseconds, ``M`` events naming
    the process (``pid``) and every track."""
    tl = _record(result)
    tracks, slices = timeline_slices(result, detail)
    for track, *_ in slices:  # a track the record did not name still gets a thread
        tracks.setdefault(track, track)
    tid = {t: i + 1 for i, t in enumerate(tracks)}
    title = f"pimserve: {tl.get('system', '?')} serving {tl.get('model', '?')}"
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": title}},
        {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
         "args": {"sort_index": pid}},
    ]
    for t, i in tid.items():
        events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": i,
                       "args": {"name": tracks[t]}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": i,
                       "args": {"sort_index": i}})
    it_end = 0.0
    last_end: dict[str, float] = {}
    for track, name, start, end, args in slices:
        ts, te = _us(start), _us(end)
        if track == "iteration":
            it_end = te
        elif te > it_end:  # floating-point rounding only: the engine's sum is the bound
            te = it_end
        prev = last_end.get(track, -1.0)
        if ts < prev:  # serial slices that meet: keep them from overlapping after rounding
            ts = prev
        dur = round(te - ts, 3)
        if dur <= 0:
            continue
        last_end[track] = te
        events.append({"ph": "X", "name": name, "cat": _category(track, name), "ts": ts,
                       "dur": dur, "pid": pid, "tid": tid[track], "args": args})
    window = tl.get("window", [])
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "generator": "pimserve",
            "system": tl.get("system"),
            "model": tl.get("model"),
            "iterations": f"{window[0]}:{window[1]}" if len(window) == 2 else "",
            "detail": detail,
            "n_layers": tl.get("n_layers"),
            "time_unit": "us of simulated time",
        },
    }


def compare_trace_events(results: Mapping[str, Any], detail: Detail = "phases") -> dict[str, Any]:
    """Several runs' timelines in one trace, one process per run (in the given order, named
    by its key), on the same simulated-time axis: the systems of ``pimserve compare`` side by
    side."""
    if not results:
        raise ConfigurationError("no runs to draw a timeline of")
    events: list[dict[str, Any]] = []
    other: dict[str, Any] = {}
    for pid, (label, r) in enumerate(results.items(), start=1):
        doc = trace_events(r, detail, pid)
        for e in doc["traceEvents"]:
            if e["ph"] == "M" and e["name"] == "process_name":
                e["args"] = {"name": f"{label}: {e['args']['name'].removeprefix('pimserve: ')}"}
            events.append(e)
        other[label] = doc["otherData"]
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"generator": "pimserve", "runs": other,
                          "time_unit": "us of simulated time"}}


def write_timeline(result: Any, path: str | Path, detail: Detail = "phases") -> int:
    """Write the run's timeline to ``path`` as trace-event JSON; returns the number of slices
    (``X`` events). Open the file in https://ui.perfetto.dev or chrome://tracing."""
    return _write(trace_events(result, detail), path)


def write_timelines(results: Mapping[str, Any], path: str | Path,
                    detail: Detail = "phases") -> int:
    """Write several runs' timelines to ``path``, one process each (see
    :func:`compare_trace_events`); returns the number of slices."""
    return _write(compare_trace_events(results, detail), path)


def _write(doc: dict[str, Any], path: str | Path) -> int:
    from pimserve.jsonutil import to_jsonable

    p = Path(path)
    try:
        p.write_text(json.dumps(to_jsonable(doc), separators=(",", ":")))
    except OSError as err:
        raise ConfigurationError(f"{p}: cannot write the timeline ({err.strerror})") from None
    return sum(1 for e in doc["traceEvents"] if e["ph"] == "X")
