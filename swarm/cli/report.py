"""`swarm report FILE.html`: a page about the swarm's history to open in a browser."""

from __future__ import annotations

from pathlib import Path

import click

from swarm.cli import Context
from swarm.cli.board import read, source_options


@click.command("report")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@source_options
@click.pass_obj
def report(ctx: Context, file: Path, swarm_dir: Path | None, url: str | None) -> None:
    """Write FILE (HTML) about the swarm's history, and FILE's name with .png: its main plot.

    The page needs no network: val_bpb over experiments (every run a dot, the promoted bests and
    the running best), runs per node and per hour, the lineage of each arena's best, and every
    promotion with its diff and reason. Synthetic (sim tier) results are labelled as such."""
    from swarm.report import gather, write

    data = read(ctx, swarm_dir, url, gather)
    if data is not None:
        for path in write(data, file):
            click.echo(str(path))


commands = [report]
