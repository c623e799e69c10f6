"""The `swarm` command. It parses, configures logging and hands off; the work lives elsewhere.

Each command group has its own module here (`harness`, ...), with a `commands` list, and is named
in COMMANDS below. A module is imported when one of its commands runs: the commands that run agents
know the roles, which load torch, and `swarm service` or `swarm query` should not wait for that.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import click

from swarm import __version__
from harness.errors import HarnessError
from swarm.ground.errors import SwarmError, printable
from swarm.ground.settings import Settings


class Context:
    """What every command gets: the settings file to read and how to read the rest."""

    def __init__(self, config: Path | None) -> None:
        self.config = config

    def settings(self, **overrides: object) -> Settings:
        """Settings from the file and environment, with the command's flags (dotted names) on top."""
        return Settings.load(file=self.config, overrides=overrides)


class SwarmGroup(click.Group):
    """Turns our own errors into one clear line and exit status 2, not a traceback; loads commands lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"swarm.cli.{COMMANDS[name]}")
        return next(command for command in module.commands if command.name == name)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (SwarmError, HarnessError) as exc:
            click.echo(printable(exc), err=True)
            sys.exit(2)


@click.group(cls=SwarmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="swarm")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="Settings file (default: ./swarm.toml if present).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, config: Path | None, verbose: int) -> None:
    """Run ML research with a swarm of agents: propose, implement, train, review, replicate, promote."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # asyncio's note on every TLS connection nats-py opens says nothing a user can act on
    logging.getLogger("asyncio").addFilter(lambda record: "eof_received()" not in record.getMessage())
    ctx.obj = Context(config)


# command -> the module here that defines it
COMMANDS: dict[str, str] = {
    "harness": "harness", "service": "service", "agent": "agent", "up": "up", "head": "up", "join": "join",
    "status": "board", "history": "board", "show": "board", "best": "board", "query": "board", "export": "board",
    "report": "report",
}  # fmt: skip
