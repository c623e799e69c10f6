"""`swarm up` (a whole swarm on this machine) and `swarm head` (its head here, nodes elsewhere)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from roles import ROLES
from swarm.cli import Context
from swarm.ground.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | None) -> float | None:
    """'90', '90s', '30m', '2h' -> seconds."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ConfigError(f"--duration {text!r}: give a number with an optional unit, like 90s, 30m or 2h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_roles(text: str) -> tuple[str, ...]:
    roles = tuple(role.strip() for role in text.split(",") if role.strip())
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        raise ConfigError(f"--roles {text!r}: choose from {', '.join(ROLES)}")
    return roles


def parse_devices(text: str | None) -> list[str]:
    """Device slots: every device here ('all'), or a list like cuda:0,cuda:1 or cpu*4 (four slots of the CPU)."""
    from harness.devices import check_device, device_of, list_devices, slots

    if text in (None, "all"):
        return list_devices()
    found = slots(text)
    for slot in found:
        check_device(device_of(slot))
    return found


def swarm_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every command that runs a swarm or a node."""
    options = [
        click.option("--dir", "swarm_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Swarm directory: keeps the stream, the board, runs and logs; run again to resume [default: ./.swarm]."),
        click.option("--tier", default=None, help="Harness tier: tiny (CPU, ~1 min a run), standard, large, sim [default: tiny]."),
        click.option("--brain", type=click.Choice(["offline", "anthropic", "openai", "hybrid"]), default=None,
                     help="What decides: offline needs no API key [default: offline]."),
        click.option("--corpus", default=None,
                     help="Training data: shakespeare, sympy, or a path to text files or Parquet shards [default: the tier's]."),
        click.option("--devices", default=None, help="Device slots for training, one run each at a time: all, cpu, a list like "
                     "cuda:0,cuda:1, or N slots of one device like cpu*4 (sim: N simulated devices) [default: all]."),
        click.option("--roles", default=",".join(ROLES), show_default=True, help="Roles of this machine's agents."),
        click.option("--ideators", type=int, default=None, help="Ideator agents [default: one per 32 device slots]."),
        click.option("--implementers", type=int, default=None, help="Implementer agents [default: one per device]."),
        click.option("--reviewers", type=int, default=None, help="Reviewer agents [default: 1]."),
        click.option("--replicators", type=int, default=None, help="Replicator agents [default: 1]."),
        click.option("--no-view", is_flag=True, help="Print one line per change instead of the live view (for logs)."),
    ]  # fmt: skip
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def settings_for(ctx: Context, opts: dict[str, Any]) -> Any:
    return ctx.settings(**{
        "dir": opts.get("swarm_dir"), "harness.tier": opts.get("tier"), "harness.corpus": opts.get("corpus"),
        "brain.kind": opts.get("brain"), "board.max_runs": opts.get("max_runs"), "agents.ideators": opts.get("ideators"),
        "agents.implementers": opts.get("implementers"), "agents.reviewers": opts.get("reviewers"),
        "agents.replicators": opts.get("replicators"), "board.ladder": opts.get("ladder"),
    })  # fmt: skip


def run(ctx: Context, opts: dict[str, Any], head_options: Any | None = None, node: bool = True) -> None:
    """Check the flags, then hand off to `swarm.up.up`: prepare, start, watch, drain, summarize."""
    from harness.tiers import get as get_tier
    from swarm.up import up

    seconds = parse_duration(opts.get("duration"))
    settings = settings_for(ctx, opts)
    if settings.board.ladder:  # the head's own tier is the lowest rung: where new ideas are tried
        settings = settings.model_copy(update={"harness": settings.harness.model_copy(update={"tier": settings.board.ladder[0]})})
    get_tier(settings.harness.tier)  # an unknown tier is a clear error before anything starts
    roles, devices = parse_roles(opts["roles"]), parse_devices(opts.get("devices"))
    console = Console(soft_wrap=True)  # lines are never cut for width: logs and scripts read them
    up(settings, devices, roles, console, not opts.get("no_view"), seconds, head_options, node, ctx.config)


LADDER = click.option("--ladder", default=None,
                      help="Tiers from cheapest to dearest, like tiny,small: winners climb from each rung to the next.")


@click.command("up")
@swarm_options
@LADDER
@click.option("--max-runs", type=int, default=None, help="Stop after this many training runs (they finish and are recorded).")
@click.option("--duration", default=None, help="Stop after this long: 90s, 30m, 2h.")
@click.pass_obj
def up(ctx: Context, **opts: Any) -> None:
    """Start a research swarm on this machine and watch it work.

    Starts the bundled nats-server, a blackboard service and agents (ideator, implementer, reviewer,
    replicator) on this machine's devices, then shows what they do. Ctrl-C drains and exits
    cleanly (claims go back to the pool); a second Ctrl-C stops at once. Without --max-runs or
    --duration it runs until stopped. Everything is kept in --dir, and running it again resumes;
    after it stops, --dir/board.duckdb answers SQL about every hypothesis, patch and run.
    """
    run(ctx, opts)


@click.command("head")
@swarm_options
@LADDER
@click.option("--listen", default="0.0.0.0:4222", show_default=True,
              help="Where NATS listens for nodes: HOST:PORT (with --servers 3, PORT and the next two).")
@click.option("--advertise", default=None, help="The address nodes reach this machine at [default: its primary address].")
@click.option("--servers", type=click.Choice(["1", "3"]), default="1", show_default=True,
              help="3: a NATS cluster with the stream replicated three ways and a standby service.")
@click.option("--auth", type=click.Choice(["password", "nkey", "none"]), default=None,
              help="How nodes prove they belong [default: password, or none on loopback].")
@click.option("--tls", is_flag=True, help="Serve TLS with a generated CA (nodes get the CA file).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None, help="Your own server certificate.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None, help="Its key.")
@click.option("--node/--no-node", default=True, show_default=True, help="Also run agents on this machine.")
@click.option("--max-runs", type=int, default=None, help="Stop after this many training runs, swarm-wide.")
@click.option("--duration", default=None, help="Stop after this long: 90s, 30m, 2h.")
@click.pass_obj
def head(ctx: Context, listen: str, advertise: str | None, servers: str, auth: str | None, tls: bool,
         tls_cert: Path | None, tls_key: Path | None, node: bool, **opts: Any) -> None:  # fmt: skip
    """Start the head of a swarm that spans machines, and print how other machines join it.

    The head runs NATS (one server, or a cluster of three with --servers 3), the blackboard
    service (and a standby with three servers) and, unless --no-node, agents of its own. Off
    loopback it requires credentials: a generated password (carried in the printed join URL) or
    an nkey (a seed file to copy); --tls adds TLS with a generated CA. Other machines run the
    printed `swarm join` command; Ctrl-C here drains this machine's agents and stops the head.
    """
    from swarm.head import HeadOptions

    host, _, port = listen.rpartition(":")
    if not host or not (port.isdigit() or port == "-1"):
        raise ConfigError(f"--listen {listen!r}: give HOST:PORT, like 0.0.0.0:4222 (-1: a random port, on loopback)")
    options = HeadOptions(host=host.strip("[]"), port=int(port), servers=int(servers), auth=auth, tls=tls,  # type: ignore[arg-type]
                          tls_cert=tls_cert, tls_key=tls_key, advertise=advertise)  # fmt: skip
    run(ctx, opts, options, node=node)


commands = [up, head]
