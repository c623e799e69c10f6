"""`swarm service`: one blackboard service process (swarm up and swarm head start these for you)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import click

from swarm.ground import aio


@click.command("service")
@click.option("--url", required=True, help="NATS server URL(s), comma-separated.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), required=True, help="This instance's DuckDB projection file.")
@click.option("--instance", default=None, help="A name for this instance (default: host-pid).")
@click.pass_obj
def service(ctx: object, url: str, db: Path, instance: str | None) -> None:
    """Run a blackboard service: it leads (decides) or stands by until the leader dies.

    Several may run against one stream; the leader lease makes sure exactly one decides."""
    from blackboard.service import serve

    settings = ctx.settings()  # type: ignore[attr-defined]
    name = instance or f"{socket.gethostname()}-{os.getpid()}"
    stopping = asyncio.Event()
    aio.run(lambda: serve(url.split(",") if "," in url else url, db, settings, name, stopping), on_signal=stopping.set)


commands = [service]
