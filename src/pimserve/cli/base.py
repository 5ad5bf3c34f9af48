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
