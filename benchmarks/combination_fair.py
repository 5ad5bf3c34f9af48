"""PAPI, PAM and PAPI+PAM on the same GPUs, the same 90 HBM stacks and the same DDR/SSD budget.

The `papi-pam` preset (6x A100) and the `pam` preset (8x H100) differ in hardware, so comparing
them compares GPUs, not designs. This benchmark serves the same offline batches (static
batching, every request at t = 0, one batch of ``batch`` requests) on the three systems of
``examples/systems/`` that share one envelope (6x A100-HBM3 with TP 6, 90 HBM stacks, 40
DDR4-PIM DIMMs, 8 SSD-PIM devices; see the files' headers):

- ``fair-papi``: 30 FC-PIM + 60 Attn-PIM (dense attention), DDR/SSD unused;
- ``fair-pam``: 90 PAM HBM3-PIM stacks (weights + KV) + DDR-PIM + SSD-PIM, FC on the GPUs;
- ``fair-papi-pam``: 30 FC-PIM + 60 PAM HBM3-PIM + DDR-PIM + SSD-PIM.

For each (workload, batch) it prints throughput (output tokens/s over the whole run and over
the decode iterations only), energy per output token, the prefill time and the decode
iterations' time breakdown (FC on the GPUs, FC on FC-PIM, attention, communication: tensor-
parallel all-reduces, PCIe transfers, KV writes to lower tiers and any migration not hidden
behind the iteration; norms), the peak KV per tier, then the ratios papi-pam / papi and
papi-pam / pam. A system that cannot hold a batch's KV is shown as refused.

A last table compares each system at its own best batch of the grid.

    python benchmarks/combination_fair.py --quick            # small grid, about 10 s
    python benchmarks/combination_fair.py --workers 2        # full grid, about 70 s on 2 cores
    python benchmarks/combination_fair.py --hbm-device pam-hbm3-pim-per-die   # sensitivity
    python benchmarks/combination_fair.py --sparse-ratio 1   # PAM tiers read densely

Reading the numbers: prefill runs on the same GPUs in all three systems, so it is identical
and only dilutes the end-to-end ratios; on long prompts it dominates the run, and its GPU
attention (AttAcc's one (request, KV head) pair per SM, ``attention_kernel: head_per_sm``) is
priced far above a FLOP-bound kernel, so compare designs on long contexts by the decode
columns. The tensor-parallel all-reduces (communication) are also the same in all three.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS_DIR = ROOT / "examples" / "systems"
#: short name -> system file; the order of the table rows
SYSTEMS = {
    "papi": SYSTEMS_DIR / "fair-papi.yaml",
    "pam": SYSTEMS_DIR / "fair-pam.yaml",
    "papi-pam": SYSTEMS_DIR / "fair-papi-pam.yaml",
}
#: systems whose KV lives in PAM tiers (the ones --hbm-device and --sparse-ratio change)
PAM_TIERED = ("pam", "papi-pam")

MODEL = "llama3.1-70b"  # 141 GB of weights fit FC-PIM's 30 x 12 GiB; 128k context for long runs
FULL = {
    "workloads": ["dolly-qa", "dolly-creative", "arxiv-sum", "long-context"],
    "batches": [16, 64, 256, 1024],
}
QUICK = {
    "workloads": ["dolly-creative", "arxiv-sum", "long-context"],
    "batches": [16, 256],
}


@dataclass
class Point:
    """One system's run at one (workload, batch): the numbers the table prints.

    Times in s, energy in J per output token, KV in GB (1e9 bytes). ``refused`` holds the
    reason when the system could not serve the batch (then the numbers are NaN)."""

    system: str
    workload: str
    batch: int
    refused: str = ""
    tok_s: float = math.nan
    decode_tok_s: float = math.nan
    j_per_tok: float = math.nan
    total_s: float = math.nan
    prefill_s: float = math.nan
    decode: dict[str, float] = field(default_factory=dict)  # decode iterations' breakdown, s
    kv_peak_gb: dict[str, float] = field(default_factory=dict)
    migrated_gb: float = 0.0
    fc_on_gpu: float = math.nan
    completed: int = 0
    wall_s: float = 0.0


def _system_spec(name: str, hbm_device: str | None) -> Any:
    """The system's spec from its file; ``hbm_device`` replaces the device of the HBM tier of
    the PAM-tiered systems (a sensitivity run), keeping counts and links."""
    from pimserve import load_system

    spec = load_system(str(SYSTEMS[name]))
    if hbm_device and name in PAM_TIERED:
        groups = [g.model_copy(update={"device": hbm_device}) if g.tier == "hbm" else g
                  for g in spec.groups]
        spec = load_system(spec.model_copy(update={"groups": groups}))
    return spec


def _static_kv_peak_bytes(model: str, workload: str, batch: int) -> float:
    """Peak KV bytes of one static batch of ``batch`` requests of ``workload`` (seed 0, as
    :func:`run_point` draws them): at decode step ``j`` every request with more than ``j``
    output tokens holds its prompt and ``j`` generated tokens."""
    import numpy as np

    from pimserve import load_model, load_workload

    reqs, _ = load_workload(workload, n_requests=batch, rate_per_s=math.inf)
    p = np.asarray(reqs.prompt_tokens, dtype=np.int64)
    o = np.asarray(reqs.output_tokens, dtype=np.int64)
    j = np.arange(int(o.max()), dtype=np.int64)[:, None]
    tokens = np.where(o[None, :] > j, p[None, :] + j, 0).sum(axis=1)
    return float(tokens.max()) * load_model(model).kv_bytes_per_token


def run_point(name: str, model: str, workload: str, batch: int, hbm_device: str | None = None,
              sparse_ratio: float | None = None) -> Point:
    """Serve ``batch`` requests of ``workload`` (all at t = 0, one static batch) on system
    ``name`` and summarise the run (a refusal is a result, not an error)."""
    from pimserve import simulate
    from pimserve.errors import PimserveError

    t0 = time.perf_counter()
    pt = Point(name, workload, batch)
    opts: dict[str, Any] = {}
    if sparse_ratio is not None and name in PAM_TIERED:
        opts["sparse_ratio"] = sparse_ratio
    try:
        r = simulate(_system_spec(name, hbm_device), model, workload, n_requests=batch,
                     rate_per_s=math.inf, batching="static", batch=batch, record_steps=True,
                     **opts)
    except PimserveError as err:
        pt.refused = str(err).split(";")[0]
        pt.wall_s = time.perf_counter() - t0
        return pt
    st = r.extra["steps"]
    parts = ("fc_gpu_s", "fc_pim_s", "attention_s", "communication_s")
    dec = {p: 0.0 for p in (*parts, "time_s")}
    pt.prefill_s = 0.0
    for i, pre in enumerate(st["prefill_tokens"]):
        if pre:
            pt.prefill_s += st["time_s"][i]
            continue
        for p in dec:
            dec[p] += st[p][i]
    dec["norms_s"] = dec["time_s"] - sum(dec[p] for p in parts)  # norms, residuals, activation
    pt.decode = {k.removesuffix("_s"): v for k, v in dec.items()}
    pt.tok_s, pt.decode_tok_s = r.throughput_tok_s, r.decode_throughput_tok_s
    pt.j_per_tok, pt.total_s = r.energy_per_token_j, r.simulated_time_s
    peak = r.extra.get("kv_peak_bytes_by_tier") or {}
    if not peak:  # one attention group: the peak of the batch's resident KV, from the requests
        peak = {"attn": _static_kv_peak_bytes(model, workload, batch)}
    pt.kv_peak_gb = {k: v / 1e9 for k, v in peak.items()}
    pt.migrated_gb = r.migrated_bytes / 1e9
    pt.fc_on_gpu, pt.completed = r.fc_on_gpu_fraction, r.requests_completed
    if r.requests_rejected:
        pt.refused = f"{r.requests_rejected} requests rejected: {r.rejected_reasons}"
    pt.wall_s = time.perf_counter() - t0
    return pt


def _ratio(a: float, b: float) -> str:
    """``a / b`` formatted, with the cases where one side did not run spelt out."""
    if math.isnan(a) and math.isnan(b):
        return "both refused"
    if math.isnan(b):
        return "served/refused"
    if math.isnan(a):
        return "refused"
    return f"{a / b:.2f}x"


def _num(v: float, width: int, digits: int = 1) -> str:
    return f"{'-':>{width}}" if math.isnan(v) else f"{v:{width}.{digits}f}"


def print_tables(points: list[Point], model: str) -> None:
    """The per-system table and the ratio table (plain text, one line per row)."""
    by = {(p.workload, p.batch, p.system): p for p in points}
    print(f"\nmodel {model}; static batch of B requests at t = 0; decode columns: seconds "
          "summed over the decode iterations (prefill: the batch's prefill iteration)")
    head = (f"{'workload':15s} {'B':>5s} {'system':9s} {'tok/s':>8s} {'dec tok/s':>9s} "
            f"{'J/tok':>6s} {'prefill':>8s} {'FC-GPU':>8s} {'FC-PIM':>7s} {'attn':>8s} "
            f"{'comm':>7s} {'norms':>6s} {'KV peak GB hbm/ddr/ssd':>23s} {'mig GB':>7s} "
            f"{'FC@GPU':>6s} {'wall':>5s}")
    print(head)
    print("-" * len(head))
    keys = sorted({(p.workload, p.batch) for p in points},
                  key=lambda k: (FULL["workloads"].index(k[0])
                                 if k[0] in FULL["workloads"] else 99, k[1]))
    for wl, b in keys:
        for name in SYSTEMS:
            p = by.get((wl, b, name))
            if p is None:
                continue
            if p.refused and math.isnan(p.tok_s):
                print(f"{wl:15s} {b:5d} {name:9s} refused: {p.refused}")
                continue
            d = p.decode
            kv = "/".join(f"{v:.0f}" for v in p.kv_peak_gb.values())
            print(f"{wl:15s} {b:5d} {name:9s} {_num(p.tok_s, 8)} {_num(p.decode_tok_s, 9)} "
                  f"{_num(p.j_per_tok, 6, 3)} {_num(p.prefill_s, 8)} {_num(d['fc_gpu'], 8)} "
                  f"{_num(d['fc_pim'], 7)} {_num(d['attention'], 8)} "
                  f"{_num(d['communication'], 7)} {_num(d['norms'], 6)} {kv:>23s} "
                  f"{p.migrated_gb:7.0f} {_num(p.fc_on_gpu, 6, 2)} {p.wall_s:5.1f}"
                  + (f"  ({p.refused})" if p.refused else ""))
    print("\nratios papi-pam / papi and papi-pam / pam (throughput: > 1 the combination is "
          "faster; J/tok: < 1 it spends less)")
    head = (f"{'workload':15s} {'B':>5s} {'tok/s vs papi':>14s} {'vs pam':>14s} "
            f"{'dec tok/s vs papi':>17s} {'vs pam':>14s} {'J/tok vs papi':>14s} {'vs pam':>14s}")
    print(head)
    print("-" * len(head))
    for wl, b in keys:
        c, pa, pm = (by.get((wl, b, n)) for n in ("papi-pam", "papi", "pam"))
        if c is None or pa is None or pm is None:
            continue
        print(f"{wl:15s} {b:5d} {_ratio(c.tok_s, pa.tok_s):>14s} {_ratio(c.tok_s, pm.tok_s):>14s} "
              f"{_ratio(c.decode_tok_s, pa.decode_tok_s):>17s} "
              f"{_ratio(c.decode_tok_s, pm.decode_tok_s):>14s} "
              f"{_ratio(c.j_per_tok, pa.j_per_tok):>14s} {_ratio(c.j_per_tok, pm.j_per_tok):>14s}")


def print_best(points: list[Point]) -> None:
    """Per workload, each system's best batch (highest throughput, then highest decode
    throughput) and the combination's ratio to the other two at their own best: a design
    that must serve smaller batches to stay fast is compared where it is fastest."""
    print("\nbest batch of the grid per system (tok/s over the whole run | decode tok/s), "
          "and papi-pam's best over the others' best")
    head = (f"{'workload':15s} {'metric':9s} " + " ".join(f"{n:>16s}" for n in SYSTEMS)
            + f" {'vs papi':>8s} {'vs pam':>7s}")
    print(head)
    print("-" * len(head))
    for wl in dict.fromkeys(p.workload for p in points):
        for metric, label in (("tok_s", "tok/s"), ("decode_tok_s", "dec tok/s")):
            best: dict[str, tuple[float, int]] = {}
            for name in SYSTEMS:
                ok = [(getattr(p, metric), p.batch) for p in points
                      if p.workload == wl and p.system == name
                      and not math.isnan(getattr(p, metric))]
                best[name] = max(ok) if ok else (math.nan, 0)
            cells = " ".join(f"{v:9.1f} @ {b:<4d}" if b else f"{'refused':>16s}"
                             for v, b in best.values())
            c = best["papi-pam"][0]
            print(f"{wl:15s} {label:9s} {cells} "
                  f"{_ratio(c, best['papi'][0]):>8s} {_ratio(c, best['pam'][0]):>7s}")


def main(argv: list[str] | None = None) -> int:
    """Run the grid and print the tables; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"small grid: {QUICK['workloads']} x batches {QUICK['batches']}")
    ap.add_argument("--model", default=MODEL, help=f"model preset (default {MODEL})")
    ap.add_argument("--workloads", help="comma-separated workload presets (overrides the grid)")
    ap.add_argument("--batches", help="comma-separated batch sizes (overrides the grid)")
    ap.add_argument("--hbm-device", default=None,
                    help="sensitivity: another device for the HBM tier of pam and papi-pam "
                    "(e.g. pam-hbm3-pim-per-die, PAM Table 1's compute read per DRAM die)")
    ap.add_argument("--sparse-ratio", type=float, default=None,
                    help="ablation: KV compression of the PAM tiers' reads (1 = dense, as "
                    "PAPI's Attn-PIM; default: the systems' 8)")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes running points in parallel (default 1)")
    ap.add_argument("--json", type=Path, default=None, help="also write every point here")
    args = ap.parse_args(argv)
    grid = QUICK if args.quick else FULL
    workloads = args.workloads.split(",") if args.workloads else grid["workloads"]
    try:
        batches = ([int(b) for b in args.batches.split(",")] if args.batches
                   else grid["batches"])
    except ValueError:
        print(f"--batches must be comma-separated integers (got {args.batches!r})",
              file=sys.stderr)
        return 2
    jobs = [(name, args.model, wl, b, args.hbm_device, args.sparse_ratio)
            for wl in workloads for b in batches for name in SYSTEMS]
    t0 = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            points = list(pool.map(run_point, *zip(*jobs, strict=True)))
    else:
        points = [run_point(*j) for j in jobs]
    notes = []
    if args.hbm_device:
        notes.append(f"HBM tier device of pam and papi-pam: {args.hbm_device}")
    if args.sparse_ratio is not None:
        notes.append(f"PAM tiers' sparse ratio: {args.sparse_ratio:g}")
    if notes:
        print("; ".join(notes))
    print_tables(points, args.model)
    print_best(points)
    print(f"\n{len(points)} runs in {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in points], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
