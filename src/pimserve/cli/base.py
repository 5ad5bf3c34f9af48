"""The command group and what every command shares (``--format``, one-line errors).

Commands live in :mod:`pimserve.cli.main` and the modules it imports at its end
(:mod:`~pimserve.cli.reproduce`, :mod:`~pimserve.cli.validate`); they all import the group
from here, so no two CLI modules import each other.
"""

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


def executor_options(prefix: str = "", points: str = "the points",
                     store: str = "the store in --out") -> Any:
    """``--workers``, ``--ray`` and ``--resume``: where a command's runs go (the sweep
    runner's executors) and whether a store's finished points are kept. ``prefix`` starts
    every help text (a command that uses the runner for one of its modes), ``points`` names
    what runs, ``store`` the store resumed."""
    options = (
        click.option("--workers", type=int, default=None,
                     help=f"{prefix}worker processes of the local pool (1: in this process); "
                          "with --ray auto, the local Ray cluster's CPUs  [default: all cores]"),
        click.option("--ray", "ray_address", default=None, metavar="ADDRESS|auto",
                     help=f"{prefix}run {points} on Ray: 'auto' starts a local cluster, an "
                          "address joins one (needs pip install 'pimserve[ray]')"),
        click.option("--resume", is_flag=True, default=False,
                     help=f"{prefix}run only {points} {store} lacks (without it, a store "
                          "that already holds some of them is refused)"),
    )

    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


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


def _pseudo_filesystem(real_path: str) -> bool:
    """Whether an absolute, resolved path lies in /proc, /sys or /dev."""
    import os

    return real_path.split(os.sep)[1:2] in (["proc"], ["sys"], ["dev"])


def check_output_paths(**paths: str | None) -> None:
    """Refuse, before any simulation runs, output files that cannot be written: a folder
    that does not exist, a device or other non-regular file (``/dev/full``), a read-only
    file or folder (``/proc/...``), or two options naming the same file. ``paths`` maps
    option names (``out``, ``timeline``) to the paths given (None: not given)."""
    import os
    from pathlib import Path

    from pimserve.errors import ConfigurationError

    seen: dict[str, str] = {}
    for opt, p in paths.items():
        if not p:
            continue
        flag = "--" + opt.replace("_", "-")
        path = Path(p)
        real = os.path.realpath(path)
        if real in seen:
            raise ConfigurationError(f"{flag} and {seen[real]} name the same file {p}: each "
                                     "would overwrite the other")
        seen[real] = flag
        parent = path.parent if str(path.parent) else Path(".")
        if _pseudo_filesystem(real):
            raise ConfigurationError(f"{flag} {p}: a system pseudo-file, not a place for "
                                     "results; give a file path")
        if not parent.is_dir():
            raise ConfigurationError(f"{flag} {p}: folder {parent} does not exist")
        if path.exists():
            if not path.is_file():
                raise ConfigurationError(f"{flag} {p}: not a regular file (a device, folder "
                                         "or pipe); give a file path")
            if not os.access(path, os.W_OK):
                raise ConfigurationError(f"{flag} {p}: the file is not writable")
        elif not os.access(parent, os.W_OK):
            raise ConfigurationError(f"{flag} {p}: folder {parent} is not writable")


def check_output_folder(folder: str, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that cannot be made or written: inside a
    system pseudo-filesystem (/proc, /sys, /dev), an existing file, or under a folder that
    is not writable."""
    import os
    from pathlib import Path

    from pimserve.errors import ConfigurationError

    real = os.path.realpath(folder)
    if _pseudo_filesystem(real):
        raise ConfigurationError(f"{flag} {folder}: inside a system pseudo-filesystem, not a "
                                 "place for results; give a folder path")
    p = Path(real)
    if p.exists() and not p.is_dir():
        raise ConfigurationError(f"{flag} {folder}: exists and is not a folder")
    anc = p
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir() or not os.access(anc, os.W_OK):
        raise ConfigurationError(f"{flag} {folder}: cannot create it under {anc} "
                                 "(not a writable folder)")
