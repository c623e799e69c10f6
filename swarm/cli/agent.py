"""`swarm agent`: one agent process (the node's supervisor starts these for you)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click

from roles import ROLES
from swarm.cli import Context


@click.command("agent")
@click.option("--role", required=True, type=click.Choice(list(ROLES)))
@click.option("--url", required=True, help="NATS server URL(s), comma-separated.")
@click.option("--dir", "swarm_dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".swarm"),
              show_default=True, help="Swarm directory (device slots, run directories).")
@click.option("--id", "agent_id", default=None, help="Agent id (default: role-host-pid).")
@click.option("--node", default=None, help="Node name (default: host name).")
@click.option("--device", default=None, help="Device for implementers and replicators (cpu, cuda:0, ...).")
@click.option("--tier", default=None, help="Harness tier (default from settings: tiny).")
@click.option("--brain", default=None, type=click.Choice(["offline", "anthropic", "openai", "hybrid"]))
@click.option("--burst", type=int, default=None, help="Do this many pieces of work, then exit.")
@click.pass_obj
def agent(ctx: Context, role: str, url: str, swarm_dir: Path, agent_id: str | None, node: str | None,
          device: str | None, tier: str | None, brain: str | None, burst: int | None) -> None:  # fmt: skip
    """Run one agent: it claims work of its role, does it, and publishes what it found."""
    from agents.runtime import AgentSpec, run

    settings = ctx.settings(**{"harness.tier": tier, "brain.kind": brain})
    host = socket.gethostname()
    spec = AgentSpec(agent=agent_id or f"{role}-{host}-{os.getpid()}", role=ROLES[role], node=node or host,
                     url=url.split(",") if "," in url else url, dir=swarm_dir.resolve(), device=device, burst=burst)  # fmt: skip
    run(spec, settings)


commands = [agent]
