"""`swarm up`: run a whole research swarm on this machine."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import click
from rich.console import Console

from swarm import aio
from swarm.cli import Context
from swarm.errors import ConfigError, SwarmError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | None) -> float | None:
    """'90', '90s', '30m', '2h' -> seconds."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ConfigError(f"--duration {text!r}: give a number with an optional unit, like 90s, 30m or 2h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@click.command("up")
@click.option("--dir", "swarm_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Swarm directory: keeps the stream, the board, runs and logs; run again to resume [default: ./.swarm].")
@click.option("--max-runs", type=int, default=None, help="Stop after this many training runs (they finish and are recorded).")
@click.option("--duration", default=None, help="Stop after this long: 90s, 30m, 2h.")
@click.option("--tier", default=None, help="Harness tier: tiny (CPU, ~1 min a run), standard, large, sim [default: tiny].")
@click.option("--brain", type=click.Choice(["offline", "anthropic", "openai", "hybrid"]), default=None,
              help="What decides: offline needs no API key [default: offline].")
@click.option("--corpus", default=None, help="Training data: shakespeare, sympy, or a path to text files or Parquet shards [default: the tier's].")
@click.option("--devices", default=None, help="Devices for training: all, cpu, or a list like cuda:0,cuda:1 [default: all].")
@click.option("--ideators", type=int, default=None, help="Ideator agents [default: 1].")
@click.option("--implementers", type=int, default=None, help="Implementer agents [default: one per device].")
@click.option("--reviewers", type=int, default=None, help="Reviewer agents [default: 1].")
@click.option("--replicators", type=int, default=None, help="Replicator agents [default: 1].")
@click.option("--no-view", is_flag=True, help="Print one line per change instead of the live view (for logs).")
@click.pass_obj
def up(ctx: Context, swarm_dir: Path | None, max_runs: int | None, duration: str | None, tier: str | None,
       brain: str | None, corpus: str | None, devices: str | None, ideators: int | None, implementers: int | None,
       reviewers: int | None, replicators: int | None, no_view: bool) -> None:  # fmt: skip
    """Start a research swarm on this machine and watch it work.

    Starts the bundled nats-server, a blackboard service and agents (ideator, implementer, reviewer,
    replicator) on this machine's devices, then shows what they do. Ctrl-C drains and exits
    cleanly (claims go back to the pool); a second Ctrl-C stops at once. Without --max-runs or
    --duration it runs until stopped. Everything is kept in --dir; `swarm history`, `swarm best`
    and `swarm report` read it afterwards.
    """
    from agents.arena import describe
    from harness.devices import check_device, list_devices
    from harness.tiers import get as get_tier
    from swarm.up import Swarm, connect_watcher, summarize, watch
    from swarm.view import LiveView, LogView

    seconds = parse_duration(duration)
    settings = ctx.settings(**{
        "dir": swarm_dir, "harness.tier": tier, "harness.corpus": corpus, "brain.kind": brain, "board.max_runs": max_runs,
        "agents.ideators": ideators, "agents.implementers": implementers, "agents.reviewers": reviewers,
        "agents.replicators": replicators,
    })  # fmt: skip
    get_tier(settings.harness.tier)  # an unknown tier is a clear error before anything starts
    chosen = list_devices() if devices in (None, "all") else [check_device(d.strip()) for d in devices.split(",")]
    console = Console(soft_wrap=True)  # lines are never cut for width: logs and scripts read them
    swarm = Swarm(settings, chosen, ctx.config)
    view = LogView(console) if no_view else LiveView(console, settings)

    # The data first, in the open: the tiny tier downloads its corpus once, and agents must not wait silently.
    with console.status(f"preparing the {settings.harness.tier} tier's data and tokenizer ..."):
        arena = describe(settings.harness.tier, chosen[0], settings.harness, notify=lambda m: console.print(m, highlight=False))
    console.print(f"arena {arena.id}", highlight=False)

    async def main() -> None:
        swarm.start()
        console.print(f"swarm up in {swarm.dir}: NATS at {swarm.url}, logs in {swarm.dir / 'logs'}", highlight=False)
        watcher = None
        try:
            watcher = await connect_watcher(swarm)
            with view:
                await watch(swarm, watcher, settings.board.max_runs, seconds, view)
        finally:
            console.print("[bold]stopping:[/] agents drain and release their claims ...")
            await swarm.stop_agents()
            if watcher is not None:
                try:
                    for line in await summarize(watcher.board, settings.board.promotion_seeds):
                        console.print(line, highlight=False)
                except SwarmError as exc:
                    console.print(f"(no summary: {exc})")
                finally:
                    await watcher.bus.close()
            await swarm.stop_services()
            console.print(f"the swarm is stopped; everything is in {swarm.dir} (run `swarm up --dir {swarm.dir}` to resume)")

    try:
        aio.run(main)
    except BaseException:
        swarm.kill()
        raise


commands = [up]
