"""The `pimserve` command line (click). Every command has --help and --format json."""

from __future__ import annotations

import sys
from typing import Any

import click

from pimserve.errors import PimserveError

FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people, json for scripts",
)


class Group(click.Group):
    """Turns PimserveError into one line on stderr and exit status 2 (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PimserveError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pimserve")
def main() -> None:
    """Simulate LLM serving on GPU + processing-in-memory systems (PAPI, PAM)."""


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
    cols = ["model", "params (B)", "layers", "hidden", "heads/kv", "ffn", "mlp", "KV KiB/tok", "ctx"]
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
            s.policies.kv_placement,
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

    for name, v in (("--rlp", rlp), ("--tlp", tlp), ("--context", context)):
        if v < 1:
            raise ConfigurationError(f"{name} must be a positive integer (got {v})")
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


if __name__ == "__main__":  # pragma: no cover
    main()
