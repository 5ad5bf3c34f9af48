"""The `pimserve` command line (click). Every command has --help and --format json."""

from __future__ import annotations

from typing import Any

import click

from pimserve.cli.base import (
    FORMAT,
    check_output_folder,
    check_output_paths,
    executor_options,
    main,
)
from pimserve.cli.options import given, options_from
from pimserve.engine.config import RunConfig
from pimserve.errors import ConfigurationError

#: bounds of `pimserve kernels` (its attention kernels hold per-request arrays)
KERNELS_MAX_RLP = 1_000_000
KERNELS_MAX_TLP = 4096
KERNELS_MAX_CONTEXT = 100_000_000



# ------------------------------------------------------------------------------------------
# catalogues
# ------------------------------------------------------------------------------------------
@main.command()
@FORMAT
def models(fmt: str) -> None:
    """List the built-in models with their key numbers."""
    from pimserve.report.console import print_json, print_table
    from pimserve.specs import list_models

    ms = list_models()
    if fmt == "json":
        print_json(
            [
                {
                    **m.model_dump(),
                    "params_b": m.n_params / 1e9,
                    "weight_gb": m.weight_bytes / 1e9,
                    "kv_kib_per_token": m.kv_bytes_per_token / 1024,
                }
                for m in ms
            ]
        )
        return
    rows = [
        [
            m.name,
            m.n_params / 1e9,
            m.n_layers,
            m.hidden_size,
            f"{m.n_heads}/{m.n_kv_heads}",
            m.ffn_size,
            m.ffn_kind + (f" {m.n_experts}e top{m.experts_per_token}" if m.is_moe else ""),
            m.kv_bytes_per_token / 1024,
            m.max_context,
        ]
        for m in ms
    ]
    cols = ["model", "params (B)", "layers", "hidden", "heads/kv", "ffn", "mlp", "KV KiB/tok",
            "ctx"]
    print_table("built-in models", cols, rows)


@main.command()
@FORMAT
def devices(fmt: str) -> None:
    """List the built-in devices and links with their key numbers."""
    from pimserve.hardware import cost_model_for
    from pimserve.ops.kernels import FCKernel
    from pimserve.report.console import print_json, print_table
    from pimserve.specs import list_devices, list_links

    devs, links = list_devices(), list_links()
    gemv = FCKernel("gemv", 1, 8192, 8192)  # 128 MiB FP16 weight, one token
    eff = {d.name: gemv.weight_bytes / cost_model_for(d).cost(gemv).time_s / 1e9 for d in devs}
    if fmt == "json":
        print_json(
            {
                "devices": [{**d.model_dump(), "gemv_weight_gbps": eff[d.name]} for d in devs],
                "links": [lk.model_dump() for lk in links],
            }
        )
        return
    rows = []
    for d in devs:
        if d.kind == "gpu":
            org = f"{d.peak_tflops:g} TFLOPS, {d.hbm_bw_gbps:g} GB/s"
        elif d.kind == "pim":
            fpu = (
                f"{d.fpus_per_bank}P1B" if d.fpus_per_bank > 1 else f"1P{d.banks_per_fpu}B"
            )
            org = f"{d.dram.standard} {fpu}, {d.dram.banks} banks, tCCD_mac {d.t_ccd_mac}"
        else:
            org = f"{d.channels} ch x {d.dies_per_channel} dies, tR {d.t_r_us:g} us"
        rows.append([d.name, d.kind, org, d.capacity_bytes / 2**30, eff[d.name]])
    print_table(
        "built-in devices",
        ["device", "kind", "organisation", "capacity (GiB)", "GEMV GB/s"],
        rows,
        caption="GEMV GB/s: weight bytes per second for one token through an 8192x8192 FP16 FC",
    )
    print_table(
        "built-in links",
        ["link", "GB/s per direction", "latency (us)", "pJ/bit"],
        [[lk.name, lk.bw_gbps, lk.latency_us, lk.energy_pj_per_bit] for lk in links],
    )


@main.command()
@FORMAT
def systems(fmt: str) -> None:
    """List the built-in systems: device groups, counts, links, policies."""
    from pimserve.report.console import print_json, print_table
    from pimserve.specs import list_systems

    ss = list_systems()
    if fmt == "json":
        print_json([s.model_dump() for s in ss])
        return
    rows = [
        [
            s.name,
            ", ".join(
                f"{g.count}x {g.device} ({g.role}{'/' + g.tier if g.tier else ''})"
                for g in s.groups
            ),
            s.policies.fc_placement,
            s.policies.kv.placement,
        ]
        for s in ss
    ]
    print_table("built-in systems", ["system", "devices", "FC placement", "KV placement"], rows)


# ------------------------------------------------------------------------------------------
# kernels
# ------------------------------------------------------------------------------------------
@main.command()
@click.option("--model", default="llama-65b", show_default=True, help="model name or file")
@click.option("--system", default="papi", show_default=True, help="system whose groups price")
@click.option(
    "--device",
    "device_names",
    multiple=True,
    help="price on these single devices instead of a system's groups (repeatable)",
)
@click.option("--rlp", default=4, show_default=True, type=int, help="requests in the batch")
@click.option("--tlp", default=4, show_default=True, type=int, help="tokens per request")
@click.option("--context", default=1024, show_default=True, type=int, help="KV tokens")
@FORMAT
def kernels(
    model: str,
    system: str,
    device_names: tuple[str, ...],
    rlp: int,
    tlp: int,
    context: int,
    fmt: str,
) -> None:
    """Each kernel of one decode iteration: FLOPs, bytes, intensity, time and energy per device.

    Times are for one instance (one layer) on the whole device group, in microseconds;
    the fastest group for each kernel is marked with *.
    """
    from pimserve.errors import ConfigurationError
    from pimserve.hardware.group import GroupModel
    from pimserve.hardware.table import iteration_totals, kernel_table
    from pimserve.report.console import print_json, print_table
    from pimserve.specs import load_model, load_system
    from pimserve.specs.system import DeviceGroup

    for name, v, hi in (("--rlp", rlp, KERNELS_MAX_RLP), ("--tlp", tlp, KERNELS_MAX_TLP),
                        ("--context", context, KERNELS_MAX_CONTEXT)):
        if v < 1:
            raise ConfigurationError(f"{name} must be a positive integer (got {v})")
        if v > hi:
            raise ConfigurationError(f"{name} must be at most {hi:,} (got {v:,}): the kernel "
                                     "table prices every request of the batch")
    spec = load_model(model)
    if device_names:
        groups = [
            GroupModel.from_spec(DeviceGroup(role="attn", device=d, count=1))
            for d in device_names
        ]
        where = ", ".join(device_names)
    else:
        sysspec = load_system(system)
        groups = [GroupModel.from_spec(g) for g in sysspec.groups]
        where = f"system {sysspec.name}"
    rows = kernel_table(spec, groups, rlp, tlp, context)
    if fmt == "json":
        print_json(
            {
                "model": spec.name,
                "rlp": rlp,
                "tlp": tlp,
                "context": context,
                "groups": [g.name for g in groups],
                "kernels": [
                    {
                        "name": r.name,
                        "kind": r.kind,
                        "shape": r.shape,
                        "count": r.count,
                        "flops": r.flops,
                        "bytes": r.bytes,
                        "intensity_flop_per_byte": r.intensity,
                        "time_s": r.time_s,
                        "energy_j": r.energy_j,
                        "fastest": r.fastest,
                    }
                    for r in rows
                ],
                "per_iteration": iteration_totals(rows),
            }
        )
        return
    names = [g.name for g in groups]
    table_rows = []
    for r in rows:
        cells: list[Any] = [r.name, r.shape, r.flops / 1e9, r.bytes / 1e6, r.intensity]
        for g in names:
            star = "*" if g == r.fastest else " "
            cells.append(f"{r.time_s[g] * 1e6:,.1f}{star} / {r.energy_j[g] * 1e3:,.2f}")
        table_rows.append(cells)
    print_table(
        f"{spec.name}, RLP {rlp} x TLP {tlp} = {rlp * tlp}, context {context}, on {where}",
        ["kernel", "M x K x N", "GFLOP", "MB", "FLOP/B", *[f"{g}\nus / mJ" for g in names]],
        table_rows,
        caption="one instance (one layer); * = fastest",
    )


# ------------------------------------------------------------------------------------------
# run, compare, calibrate
# ------------------------------------------------------------------------------------------
def workload_options(f: Any) -> Any:
    """Options that choose the requests: a preset or a trace file."""
    f = click.option("--rate", "rate_per_s", type=float, default=None,
                     help="arrival rate for a synthetic preset, requests/s (default: its own)")(f)
    f = click.option("--requests", "n_requests", type=int, default=None,
                     help="requests drawn from a preset (default 256) or kept from a trace")(f)
    f = click.option("--trace-sort", is_flag=True, default=False,
                     help="reorder a trace whose rows are not in time order")(f)
    f = click.option("--time-unit", type=click.Choice(["s", "ms"]), default=None,
                     help="unit of a generic trace's arrival column")(f)
    f = click.option("--trace-columns", default=None, metavar="KEY=COL,...",
                     help="generic trace: which column is which, e.g. "
                          "arrival=ts,prompt=in,output=out (arrival optional)")(f)
    f = click.option("--trace-format", default="azure", show_default=True,
                     help="azure | mooncake | dolly | arxiv | generic")(f)
    f = click.option("--trace", type=click.Path(dir_okay=False), default=None,
                     help="serve this trace file instead of a preset")(f)
    f = click.option("--workload", default="dolly-creative", show_default=True,
                     help="workload preset (see `pimserve workloads`)")(f)
    return f


def trace_options(kwargs: dict[str, Any], trace: str | None,
                  trace_format: str) -> dict[str, Any]:
    """Pop --trace-columns, --time-unit and --trace-sort from ``kwargs`` into the trace
    loader's options (``columns``, ``time_unit``, ``sort``)."""
    cols, unit, sort = (kwargs.pop("trace_columns", None), kwargs.pop("time_unit", None),
                        kwargs.pop("trace_sort", False))
    opts: dict[str, Any] = {}
    if (cols or unit) and trace_format != "generic":
        raise ConfigurationError("--trace-columns and --time-unit are for --trace-format "
                                 f"generic (got --trace-format {trace_format})")
    if (cols or unit or sort) and trace is None:
        raise ConfigurationError("--trace-columns, --time-unit and --trace-sort need --trace")
    if trace_format == "generic" and trace is not None and not cols:
        raise ConfigurationError("--trace-format generic needs --trace-columns, e.g. "
                                 "arrival=ts,prompt=in,output=out")
    if cols:
        mapping: dict[str, str] = {}
        for part in cols.split(","):
            key, eq, col = part.partition("=")
            if not eq or not key.strip() or not col.strip():
                raise ConfigurationError(
                    f"--trace-columns: '{part}' is not KEY=COLUMN (keys: arrival, prompt, "
                    "output), e.g. arrival=ts,prompt=in,output=out"
                )
            mapping[key.strip()] = col.strip()
        opts["columns"] = mapping
    if unit:
        opts["time_unit"] = unit
    if sort:
        opts["sort"] = True
    return opts


def timeline_options(f: Any) -> Any:
    """Options that write a Perfetto / Chrome trace of some iterations."""
    f = click.option("--timeline-detail", type=click.Choice(["phases", "layers"]),
                     default="phases", show_default=True,
                     help="phases: one slice per phase summed over the decoder layers; layers: "
                          "one per layer (large: use a short window)")(f)
    f = click.option("--timeline-steps", default=None, metavar="A:B",
                     help="iterations the timeline covers, A included, B excluded, from 0 "
                          "[default: 0:50]")(f)
    f = click.option("--timeline", type=click.Path(dir_okay=False), default=None,
                     help="write a Perfetto / Chrome trace of iterations (see --timeline-steps) "
                          "to this JSON file; open it in https://ui.perfetto.dev")(f)
    return f


def _timeline_window(timeline: str | None, timeline_steps: str | None) -> dict[str, Any]:
    """The run options that record the timeline window (none without --timeline)."""
    from pimserve.engine.config import DEFAULT_TIMELINE_STEPS, parse_steps
    from pimserve.errors import ConfigurationError

    if timeline_steps is not None and timeline is None:
        raise ConfigurationError("--timeline-steps needs --timeline PATH (the file to write)")
    if timeline is None:
        return {}
    return {"timeline_steps": parse_steps(timeline_steps, "--timeline-steps")
            if timeline_steps is not None else DEFAULT_TIMELINE_STEPS}


def _write_timeline(results: dict[str, Any], timeline: str, detail: Any, fmt: str) -> None:
    """Write the runs' timeline (one run: its own trace; several: one process each), take it
    out of the results, and say what was written."""
    from pimserve.report.console import console
    from pimserve.report.timeline import write_timeline, write_timelines

    runs = list(results.values())
    n_slices = (write_timeline(runs[0], timeline, detail) if len(runs) == 1
                else write_timelines(results, timeline, detail))
    windows = [r.extra.pop("timeline")["window"] for r in runs]  # in its own file
    if fmt != "table":
        return
    a = windows[0][0]
    b = max(w[1] for w in windows)
    console.print(
        f"timeline: {n_slices} slices of iterations {a}..{b - 1} written to {timeline} "
        "(open it in https://ui.perfetto.dev)" if b > a else
        f"timeline: the run ended after {b} iterations, before the window; wrote an "
        f"empty trace to {timeline}"
    )


def _progress_runner(enabled: bool) -> Any:
    """A context manager yielding a progress callback (rich bar on a terminal)."""
    import contextlib

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    @contextlib.contextmanager
    def ctx() -> Any:
        if not enabled:
            yield None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TextColumn("requests"),
                      TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("simulating", total=None)

            def cb(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield cb

    return ctx()


def _summary_rows(r: Any) -> list[list[Any]]:
    def s(d: dict, k: str = "mean") -> Any:
        v = d.get(k)
        return "-" if v is None else v

    return [
        ["requests completed / total", f"{r.requests_completed} / {r.requests_total}"],
        ["rejected / still running / waiting",
         f"{r.requests_rejected} / {r.requests_running} / {r.requests_waiting}"],
        ["preemptions", r.preemptions],
        ["output tokens", r.output_tokens],
        ["iterations", r.iterations],
        ["simulated time (s)", r.simulated_time_s],
        ["throughput (tok/s)", r.throughput_tok_s],
        ["TTFT mean / p99 (ms)", f"{s(r.ttft_ms):.4g} / {s(r.ttft_ms, 'p99'):.4g}"
         if r.ttft_ms["mean"] is not None else "-"],
        ["TPOT mean / p99 (ms)", f"{s(r.tpot_ms):.4g} / {s(r.tpot_ms, 'p99'):.4g}"
         if r.tpot_ms["mean"] is not None else "-"],
        ["latency mean / p99 (s)", f"{s(r.latency_s):.4g} / {s(r.latency_s, 'p99'):.4g}"
         if r.latency_s["mean"] is not None else "-"],
        *([["SLO attainment / goodput (req/s, tok/s)",
            f"{r.slo_attainment:.3g} / {r.goodput_req_s:.4g} / {r.goodput_tok_s:.4g}"]]
          if r.slo_attainment is not None else []),
        ["energy (J) / per token (J)", f"{r.energy_j:.4g} / {r.energy_per_token_j:.4g}"],
        ["FC on GPU (FLOP fraction)", r.fc_on_gpu_fraction],
        ["mean RLP / mean TLP", f"{r.mean_rlp:.3g} / {r.mean_tlp:.3g}"],
        *[[f"time: {k} (s)", v] for k, v in r.time_breakdown_s.items()],
        *[[f"KV on {k} (GB, mean)", v / 1e9] for k, v in r.kv_bytes_by_tier.items()],
        *[[f"attention on {k} (s)", v] for k, v in r.attention_time_by_tier_s.items()
          if len(r.attention_time_by_tier_s) > 1],
        ["KV migrated (GB) / sparse read fraction",
         f"{r.migrated_bytes / 1e9:.4g} / {r.sparse_read_fraction:.3g}"],
        ["wall time (s)", r.wall_time_s],
    ]


@main.command()
@click.option("--system", default="papi", show_default=True, help="system name or YAML file")
@click.option("--model", default="llama-65b", show_default=True, help="model name or file")
@workload_options
@options_from(RunConfig)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="also write the result as JSON to this file")
@timeline_options
@FORMAT
def run(system: str, model: str, workload: str, trace: str | None, trace_format: str,
        n_requests: int | None, rate_per_s: float | None, out: str | None,
        timeline: str | None, timeline_steps: str | None, timeline_detail: str, fmt: str,
        **kwargs: Any) -> None:
    """Serve a workload on one system and print throughput, latency, energy and breakdowns.

    With no options: PAPI serving LLaMA-65B on 256 Dolly creative-writing requests, static
    batches of 16, no speculation.
    """
    from pimserve.api import simulate
    from pimserve.report.console import console, print_json, print_table

    check_output_paths(out=out, timeline=timeline)
    t_opts = trace_options(kwargs, trace, trace_format)
    opts = given(kwargs, RunConfig) | _timeline_window(timeline, timeline_steps)
    with _progress_runner(fmt == "table" and console.is_terminal) as cb:
        r = simulate(system, model, workload, trace=trace, trace_format=trace_format,
                     n_requests=n_requests, rate_per_s=rate_per_s, progress=cb,
                     trace_options=t_opts, **opts)
    if timeline is not None:
        _write_timeline({system: r}, timeline, timeline_detail, fmt)
    if out:
        from pathlib import Path

        Path(out).write_text(r.to_json())
    if fmt == "json":
        print_json(r.to_dict())
        return
    c = r.config
    title = (f"{r.system} serving {r.model} on {r.workload}: {c['batching']} batching, "
             f"batch {c['batch']}, TLP {c['tlp']}, FC placement {c['fc_placement']}"
             + (f" (alpha {c['alpha']:g})" if c.get("alpha") else ""))
    print_table(title, ["metric", "value"], _summary_rows(r))
    for w in r.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


@main.command()
@click.option("--systems", default="papi,a100-attacc,a100-hbmpim,attacc-only",
              show_default=True, help="comma-separated system names or files")
@click.option("--baseline", default=None,
              help="system the speedups are relative to (default: a100-attacc if listed, "
                   "else the first)")
@click.option("--model", default="llama-65b", show_default=True, help="model name or file")
@workload_options
@options_from(RunConfig)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="also write every result as JSON to this file")
@timeline_options
@FORMAT
def compare(systems: str, baseline: str | None, model: str, workload: str, trace: str | None,
            trace_format: str, n_requests: int | None, rate_per_s: float | None,
            out: str | None, timeline: str | None, timeline_steps: str | None,
            timeline_detail: str, fmt: str, **kwargs: Any) -> None:
    """Serve the same workload on several systems; throughput, latency, energy side by side.

    With --timeline, one trace holds every system's iterations, one process each, on the same
    simulated-time axis."""
    from pimserve.api import simulate
    from pimserve.errors import ConfigurationError
    from pimserve.report.console import console, print_json, print_table

    check_output_paths(out=out, timeline=timeline)
    names = [s.strip() for s in systems.split(",") if s.strip()]
    if not names:
        raise ConfigurationError("--systems needs at least one system name")
    base = baseline or ("a100-attacc" if "a100-attacc" in names else names[0])
    if base not in names:
        raise ConfigurationError(f"--baseline '{base}' is not among --systems ({systems})")
    t_opts = trace_options(kwargs, trace, trace_format)
    opts = given(kwargs, RunConfig) | _timeline_window(timeline, timeline_steps)
    results = {}
    for name in names:
        with _progress_runner(fmt == "table" and console.is_terminal) as cb:
            results[name] = simulate(name, model, workload, trace=trace,
                                     trace_format=trace_format, n_requests=n_requests,
                                     rate_per_s=rate_per_s, progress=cb,
                                     trace_options=t_opts, **opts)
    if timeline is not None:
        _write_timeline(results, timeline, timeline_detail, fmt)
    b = results[base]
    slo_cols = b.slo_attainment is not None
    rows = []
    out_rows = []
    for given_as, r in results.items():
        # a system given as a YAML file is labelled by its own name:, not the file's
        name = r.system if given_as != r.system and given_as.endswith((".yaml", ".yml")) \
            else given_as
        speedup = r.throughput_tok_s / b.throughput_tok_s if b.throughput_tok_s else float("nan")
        eff = (b.energy_per_token_j / r.energy_per_token_j
               if r.energy_per_token_j else float("nan"))
        rows.append([name, r.throughput_tok_s, speedup, r.ttft_ms["p50"] or float("nan"),
                     r.tpot_ms["mean"] or float("nan"),
                     r.latency_s["p99"] or float("nan"), r.energy_per_token_j, eff,
                     r.fc_on_gpu_fraction, r.requests_completed, r.requests_rejected,
                     *([r.slo_attainment, r.goodput_tok_s] if slo_cols else [])])
        out_rows.append({"system": name, "given_as": given_as, "speedup": speedup,
                         "energy_efficiency": eff, "result": r.to_dict()})
    if out:
        import json
        from pathlib import Path

        from pimserve.jsonutil import to_jsonable

        Path(out).write_text(json.dumps(to_jsonable({"baseline": base, "runs": out_rows}),
                                        indent=2))
    if fmt == "json":
        print_json({"baseline": base, "runs": out_rows})
        return
    print_table(
        f"{model} on {b.workload}, baseline {base}",
        ["system", "tok/s", "speedup", "TTFT p50 ms", "TPOT ms", "p99 latency s", "J/token",
         "energy eff.", "FC on GPU", "completed", "rejected",
         *(["SLO attain.", "goodput tok/s"] if slo_cols else [])],
        rows,
    )


@main.command()
@click.option("--system", default="papi", show_default=True, help="system with gpu and fc_pim")
@click.option("--model", default=None,
              help="model name or file  [default: llama3-70b for PAM systems, the model "
                   "of its evaluation; llama-65b otherwise, PAPI's]")
@click.option("--max-parallelism", default=512, show_default=True, type=int,
              help="largest RLP x TLP swept")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="PAM x:y: folder of the store (sweep.sqlite) of the grid's runs, kept for "
                   "--resume and `pimserve sweep export`  [default: a temporary store]")
@executor_options(prefix="PAM x:y: ", points="the grid points")
@FORMAT
def calibrate(system: str, model: str | None, max_parallelism: int, out: str | None,
              workers: int | None, ray_address: str | None, resume: bool, fmt: str) -> None:
    """Calibrate a system's free parameter: PAPI's alpha (the RLP x TLP where one layer's FC
    is faster on the GPU than on FC-PIM, read from the cost models), or, for systems with
    PAM's KV placement, PAM's x:y (a grid search on a long-context calibration workload,
    whose runs go through the sweep runner: --workers, --ray, --out, --resume)."""
    from pimserve.engine.calibration import calibrate_alpha
    from pimserve.experiments.calibration import calibrate_xy
    from pimserve.report.console import print_json, print_table
    from pimserve.specs import load_system

    spec = load_system(system)
    pam = bool(spec.tiers()) and spec.policies.kv.placement == "pam"
    if model is None:
        model = "llama3-70b" if pam else "llama-65b"
    runner = {"--out": out, "--workers": workers, "--ray": ray_address,
              "--resume": resume or None}
    if pam:
        if resume and out is None:
            raise ConfigurationError("--resume needs --out, the folder of the store to resume")
        if out is not None:
            check_output_folder(out)
        kw: dict[str, Any] = {}
        if out is not None:
            kw["store"] = out
        if resume:
            kw["resume"] = True
        if workers is not None or ray_address is not None:
            from pimserve.experiments.sweep import make_executor

            kw["executor"] = make_executor(workers, ray_address)
        try:
            xy = calibrate_xy(spec, model, **kw)
        finally:
            if "executor" in kw:
                kw["executor"].close()
        sm = xy.summary
        ran = ({"store": None if xy.store is None else str(xy.store), "points": sm.points,
                "stored_before": sm.stored_before, "ran": sm.ran, "executor": sm.executor}
               if sm is not None else None)
        if fmt == "json":
            print_json({"system": xy.system, "model": xy.model, "x": xy.x, "y": xy.y,
                        "how": xy.how, "points": xy.points, "runner": ran})
            return
        rows = [[p["x"], p["y"], p["attention_s"], p["throughput_tok_s"],
                 p["migrated_bytes"] / 1e9] for p in xy.points]
        caption = xy.how
        if ran is not None:
            caption += (f". Ran {ran['ran']} of {ran['points']} points on {ran['executor']}, "
                        f"{ran['stored_before']} from the store"
                        + (f" {ran['store']}" if ran["store"] else ""))
        print_table(f"PAM x:y for {xy.system} / {xy.model} = {xy.x:g}:{xy.y:g}:1",
                    ["x", "y", "attention s", "tok/s", "migrated GB"], rows, caption=caption)
        return

    misplaced = [k for k, v in runner.items() if v is not None]
    if misplaced:
        raise ConfigurationError(
            f"{', '.join(misplaced)}: only for PAM's x:y grid search (a system with kv placement "
            f"'pam'); {spec.name}'s alpha is read from the cost models, without simulations")
    cal = calibrate_alpha(system, model, max_parallelism)
    if fmt == "json":
        print_json({"system": cal.system, "model": cal.model, "alpha": cal.alpha,
                    "how": cal.how, "parallelism": cal.parallelism,
                    "gpu_time_s": cal.gpu_time_s, "pim_time_s": cal.pim_time_s})
        return
    show = [n for n in cal.parallelism if n & (n - 1) == 0 or n == cal.alpha
            or n == cal.alpha + 1]
    rows = [[n, cal.gpu_time_s[n - 1] * 1e6, cal.pim_time_s[n - 1] * 1e6,
             "FC-PIM" if n <= cal.alpha else "GPU"] for n in show]
    print_table(f"alpha for {cal.system} / {cal.model} = {cal.alpha:g}",
                ["RLP x TLP", "GPU us/layer", "FC-PIM us/layer", "PAPI places on"], rows,
                caption=cal.how)


@main.command()
@FORMAT
def workloads(fmt: str) -> None:
    """List the workload presets and where their statistics come from."""
    from pimserve.report.console import print_json, print_table
    from pimserve.workload.presets import WORKLOADS

    rows = [[n, WORKLOADS.help(n)] for n in WORKLOADS.names()]
    if fmt == "json":
        print_json([{"name": n, "description": d} for n, d in rows])
        return
    print_table("workload presets", ["workload", "description"], rows)


# ------------------------------------------------------------------------------------------
# SLO search
# ------------------------------------------------------------------------------------------
@main.command("slo-search")
@click.option("--system", default="papi", show_default=True, help="system name or YAML file")
@click.option("--model", default="llama-65b", show_default=True, help="model name or file")
@click.option("--workload", default="sharegpt", show_default=True,
              help="workload preset; the search sets its arrival rate (see `pimserve workloads`)")
@click.option("--tpot-slo-ms", type=float, required=True,
              help="SLO on time per output token, ms")
@click.option("--percentile", default="p99", show_default=True,
              help="TPOT statistic the SLO bounds: p50 | p99 | mean")
@click.option("--ttft-slo-ms", type=float, default=None,
              help="optional SLO on the same statistic of time to first token, ms")
@click.option("--n-requests", "--requests", "n_requests", type=int, default=256,
              show_default=True, help="requests per probe")
@click.option("--rate-lo", type=float, default=None,
              help="lower end of the rate bracket, req/s (default: found automatically)")
@click.option("--rate-hi", type=float, default=None,
              help="upper end of the rate bracket, req/s (default: found automatically)")
@click.option("--tol", type=float, default=0.05, show_default=True,
              help="stop when the bracket is at most this fraction of its lower end wide")
@click.option("--max-probes", type=int, default=12, show_default=True,
              help="most simulated probes")
@click.option("--max-wait-fraction", type=float, default=0.02, show_default=True,
              help="queue-growth limit: p99 TTFT / arrival window")
@click.option("--allow-capacity-rejections", is_flag=True, default=False,
              help="let probes pass with requests rejected for KV capacity (still reported)")
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of every probe (workload draw and run)")
@options_from(RunConfig, skip=("seed", "record_steps", "max_iterations", "ttft_slo_ms",
                               "tpot_slo_ms"))
@FORMAT
def slo_search_cmd(system: str, model: str, workload: str, tpot_slo_ms: float,
                   percentile: str, ttft_slo_ms: float | None, n_requests: int,
                   rate_lo: float | None, rate_hi: float | None, tol: float, max_probes: int,
                   max_wait_fraction: float, allow_capacity_rejections: bool, seed: int,
                   fmt: str, **kwargs: Any) -> None:
    """Peak throughput under a TPOT SLO: bisection over the Poisson arrival rate.

    Each probe simulates --n-requests requests arriving at one rate (continuous batching);
    it meets the SLO when the TPOT statistic is within --tpot-slo-ms, no request was
    rejected for KV capacity, every request finished, and the queue does not grow (p99 TTFT
    at most --max-wait-fraction of the arrival window). Prints every probe and the best rate.
    """
    import contextlib

    from pimserve.experiments.slo import slo_search
    from pimserve.report.console import console, print_json, print_table

    opts = given(kwargs, RunConfig)
    live = fmt == "table" and console.is_terminal
    waiting: Any = console.status("probing", spinner="dots") if live else contextlib.nullcontext()
    with waiting as status:

        def progress(p: Any) -> None:
            if status is not None:
                status.update(f"probed {p.rate_per_s:.4g} req/s: "
                              f"{'meets' if p.met else 'fails'}")

        res = slo_search(system, model, workload, tpot_slo_ms, percentile=percentile,
                         n_requests=n_requests, rate_lo=rate_lo, rate_hi=rate_hi, tol=tol,
                         max_probes=max_probes, seed=seed, ttft_slo_ms=ttft_slo_ms,
                         max_wait_fraction=max_wait_fraction,
                         allow_capacity_rejections=allow_capacity_rejections,
                         progress=progress, **opts)
    if fmt == "json":
        print_json(res.to_dict())
        return
    pct = res.percentile
    rows = [
        [i + 1, p.rate_per_s, "-" if p.tpot_ms is None else p.tpot_ms,
         "-" if p.ttft_p99_ms is None else p.ttft_p99_ms,
         "-" if p.wait_fraction is None else f"{p.wait_fraction:.2%}",
         p.throughput_tok_s, p.offered_tok_s, f"{p.requests_completed} / {p.requests_total}",
         p.requests_rejected, p.met, p.why or "-"]
        for i, p in enumerate(res.probes)
    ]
    print_table(
        f"{res.system} serving {res.model} on {res.workload}: TPOT {pct} SLO "
        f"{res.tpot_slo_ms:g} ms",
        ["#", "rate (req/s)", f"TPOT {pct} (ms)", "TTFT p99 (ms)", "wait / window",
         "tok/s", "offered tok/s", "completed", "rejected", "meets", "why not"],
        rows,
        caption=res.how,
    )
    if res.met:
        console.print(
            f"peak throughput under SLO: {res.throughput_tok_s:,.1f} tok/s at "
            f"{res.best_rate_per_s:.4g} req/s (TPOT {pct} {res.tpot_ms:.4g} ms <= "
            f"{res.tpot_slo_ms:g} ms; offered {res.offered_tok_s:,.1f} tok/s)"
        )
    else:
        console.print(f"no rate meets the SLO (TPOT {pct} <= {res.tpot_slo_ms:g} ms); "
                      "see the table's caption")
    for w in res.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


# ------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------
@main.command()
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="folder for the PNG files [default: RESULTS without .json, plus _plots]")
@FORMAT
def plot(results: str, out_dir: str | None, fmt: str) -> None:
    """Draw the standard charts of a run or compare result (PNG files).

    RESULTS is the JSON of `pimserve run --out FILE` (or `--format json`) or of `pimserve
    compare --out FILE`. Charts: throughput, latency CDFs (TTFT, TPOT), time and energy
    breakdowns, FC placement over time (needs --record-steps) and KV by tier (systems with
    KV tiers); a chart the results cannot support is skipped with the reason.
    """
    from pathlib import Path

    from pimserve.report.console import console, print_json, print_table
    from pimserve.report.plots import load_results, plot_results

    res = load_results(results)
    src = Path(results)
    folder = Path(out_dir) if out_dir else src.with_name(src.stem + "_plots")
    check_output_folder(str(folder))
    report = plot_results(res, folder)
    if fmt == "json":
        print_json({"out": str(folder), "files": {k: str(v) for k, v in report.files.items()},
                    "skipped": report.skipped})
        return
    rows = [[k, str(v)] for k, v in report.files.items()]
    rows += [[k, f"skipped: {why}"] for k, why in report.skipped.items()]
    what = f"{len(res.runs)} runs" if res.kind == "compare" else f"run of {res.runs[0][0]}"
    print_table(f"plots of {src.name} ({what})", ["chart", "file"], rows)
    if not report.files:
        console.print("[yellow]warning:[/yellow] no chart could be drawn")


# Commands that live in their own modules register themselves on import.
from pimserve.cli import reproduce as _reproduce  # noqa: E402,F401
from pimserve.cli import sweep as _sweep  # noqa: E402,F401
from pimserve.cli import validate as _validate  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    main()
