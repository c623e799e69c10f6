"""Reading a swarm's history: `swarm status`, `history`, `show`, `best`, `query`, `export`.

Each reads through `swarm.reader`: the running service at --url, or the swarm in --dir (its
service while it runs, its board file once it stopped). The answers are the same either way.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from swarm.cli import Context
from swarm.ground.errors import ConfigError
from swarm.output import FORMATS

T = TypeVar("T")


def source_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--dir and --url: where the history is read from."""
    command = click.option("--url", default=None,
                           help="NATS URL of a running swarm (its service answers); overrides --dir.")(command)  # fmt: skip
    return click.option("--dir", "swarm_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Swarm directory: read by its service while the swarm runs, from its board.duckdb "
                             "(or a Parquet export) once it stopped [default: ./.swarm].")(command)  # fmt: skip


def format_option(*formats: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--format", "fmt", type=click.Choice(formats or FORMATS), default="table", show_default=True,
                        help="Output: a table for people, CSV or JSON for programs.")  # fmt: skip


def read(ctx: Context, swarm_dir: Path | None, url: str | None, work: Callable[[Any], Awaitable[T]]) -> T | None:
    """Settings (directory, credentials) from the usual places, then `work` with the chosen reader."""
    from swarm.ground.settings import Credentials
    from swarm.reader import read as read_with

    settings = ctx.settings(dir=swarm_dir)
    return read_with(settings.dir, url, Credentials.from_settings(settings.nats), work)


def console() -> Console:
    """Tables as wide as the terminal; written to a file or a pipe, wide enough not to fold ids."""
    import os
    import sys

    wide = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
    return Console(highlight=False, width=wide)


@click.command("status")
@source_options
@click.option("--watch", is_flag=True, help="Keep refreshing until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(0.2), default=2.0, show_default=True, help="Seconds between refreshes with --watch.")
@format_option("table", "json")
@click.pass_obj
def status(ctx: Context, swarm_dir: Path | None, url: str | None, watch: bool, interval: float, fmt: str) -> None:
    """Nodes, agents (and what each is doing, while the swarm runs), devices, queues, each arena's
    best and runs per hour."""
    from swarm import status as view

    if watch and fmt != "table":
        raise ConfigError("--watch shows tables that refresh; --format json is for one snapshot")
    out = console()
    if watch:
        read(ctx, swarm_dir, url, lambda reader: view.watch(reader, out, interval))
    else:
        read(ctx, swarm_dir, url, lambda reader: view.once(reader, out, fmt))


@click.command("history")
@source_options
@click.option("--status", default=None, help="Only runs with this status: ok, running, crash, timeout, diverged, oom, "
                                             "rejected, lost, or failed (any failure).")  # fmt: skip
@click.option("--role", default=None, help="Only runs by agents of this role (implementer, replicator).")
@click.option("--agent", default=None, help="Only runs by this agent.")
@click.option("--arena", default=None, help="Only runs in this arena.")
@click.option("--since", default=None, help="Only runs updated since: an ISO time (UTC unless it says) or an age: 2h, 30m.")
@click.option("--until", default=None, help="Only runs updated before: an ISO time or an age (2h = two hours ago).")
@click.option("--limit", type=click.IntRange(0, 10_000), default=50, show_default=True, help="At most this many runs.")
@format_option()
@click.pass_obj
def history(ctx: Context, swarm_dir: Path | None, url: str | None, status: str | None, role: str | None,
            agent: str | None, arena: str | None, since: str | None, until: str | None, limit: int, fmt: str) -> None:  # fmt: skip
    """The swarm's runs, newest first, with their idea, agent, role and node."""
    from swarm.history import parse_when, print_history

    filters = dict(status=status, role=role, agent=agent, arena=arena, since=parse_when(since, "--since"),
                   until=parse_when(until, "--until"), limit=limit)  # fmt: skip
    runs = read(ctx, swarm_dir, url, lambda reader: reader.history(**filters))
    if runs is not None:
        print_history(console(), runs, fmt)


@click.command("show")
@click.argument("id")
@source_options
@format_option("table", "json")
@click.pass_obj
def show(ctx: Context, id: str, swarm_dir: Path | None, url: str | None, fmt: str) -> None:
    """One hypothesis (h-...), patch (p-...) or run (r-...): its record, diff, results, reviews,
    claims, and its lineage back to the baseline."""
    from swarm.history import gather_show, print_show

    found = read(ctx, swarm_dir, url, functools.partial(gather_show, id=id))
    if found is not None:
        print_show(console(), found, fmt)


@click.command("best")
@source_options
@click.option("--arena", default=None, help="Only this arena.")
@format_option()
@click.pass_obj
def best(ctx: Context, swarm_dir: Path | None, url: str | None, arena: str | None, fmt: str) -> None:
    """Each arena's best: mean ± std of val_bpb over its seeds, the idea, and the lineage that led to it;
    then what each brain kind paid per promoted improvement (LLM dollars, device hours)."""
    from swarm.history import gather_best, gather_costs, print_bests, print_costs

    found = read(ctx, swarm_dir, url, functools.partial(gather_best, arena=arena))
    if found is not None:
        print_bests(console(), found[0], fmt, found[1])
        costs = read(ctx, swarm_dir, url, gather_costs)
        if costs is not None and fmt == "table":
            print_costs(console(), costs, fmt)


@click.command("query")
@click.argument("sql")
@source_options
@click.option("--limit", type=click.IntRange(0, 10_000), default=1000, show_default=True, help="At most this many rows.")
@format_option()
@click.pass_obj
def query(ctx: Context, sql: str, swarm_dir: Path | None, url: str | None, limit: int, fmt: str) -> None:
    """Run one read-only SELECT on the board (tables: runs, patches, hypotheses, reviews, bests, ...).

    Anything that would change the board or read outside it is refused."""
    from swarm import output

    result = read(ctx, swarm_dir, url, lambda reader: reader.query(sql, limit=limit))
    if result is not None:
        output.emit(console(), result["columns"], result["rows"], fmt)
        if result["truncated"]:
            click.echo(f"(more rows than shown: the first {len(result['rows'])}; raise --limit or add LIMIT)", err=True)


@click.command("export")
@click.argument("path", type=click.Path(path_type=Path))
@source_options
@click.pass_obj
def export(ctx: Context, path: Path, swarm_dir: Path | None, url: str | None) -> None:
    """Write the history to Parquet: PATH ending in .parquet gets the runs with their idea, parent
    and agent role; any other PATH becomes a directory with every table of the board."""
    from swarm.export import export as export_to

    written = read(ctx, swarm_dir, url, lambda reader: export_to(reader, path))
    for file in written or []:
        click.echo(str(file))


commands = [status, history, show, best, query, export]
