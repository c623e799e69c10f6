"""`swarm join URL`: add this machine's agents to a running swarm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from swarm.ground import aio
from swarm.cli import Context
from swarm.cli.up import parse_devices, parse_roles, settings_for, swarm_options
from swarm.ground.errors import ConfigError, SwarmError


@click.command("join")
@click.argument("url")
@swarm_options
@click.option("--nkey", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The swarm's nkey seed file (when the head uses --auth nkey).")
@click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The CA that signed the head's certificate (when the head uses --tls).")
@click.option("--name", default=None, help="This node's name [default: the host name].")
@click.pass_obj
def join(ctx: Context, url: str, nkey: Path | None, tls_ca: Path | None, name: str | None, **opts: Any) -> None:
    """Join the swarm at URL with this machine's devices, and work until Ctrl-C.

    URL is what `swarm head` printed (with the password in it, if the head uses one). The node
    checks that its harness (code, data, tokenizer) has the swarm's fingerprint and refuses to
    join otherwise; then it starts its agents, which claim work, run it here and publish the
    results. Ctrl-C drains: claims go back to the pool, and the node can join again later.
    """
    from agents.arena import describe
    from swarm.ground.bus import Bus, Credentials
    from swarm.credentials import split_urls
    from swarm.node import Node
    from swarm.supervisor import Supervisor
    from swarm.up import connect_watcher, watch
    from swarm.view import LiveView, LogView

    settings = settings_for(ctx, opts)
    urls, user, password = split_urls(url, settings.nats.user, settings.nats.password)  # or SWARM_NATS__PASSWORD
    nats = settings.nats.model_copy(update={"user": user, "password": password, "nkey_seed_file": nkey or settings.nats.nkey_seed_file,
                                            "tls_ca": tls_ca or settings.nats.tls_ca})  # fmt: skip
    settings = settings.model_copy(update={"nats": nats})
    roles, devices = parse_roles(opts["roles"]), parse_devices(opts.get("devices"))
    console = Console(soft_wrap=True)
    credentials = Credentials.from_settings(settings.nats)

    async def swarm_config() -> dict[str, Any]:
        bus = await Bus.connect(urls, name="swarm join", credentials=credentials, wait=15)
        try:
            config = await bus.swarm_config()
        finally:
            await bus.close()
        if config is None:
            raise ConfigError(f"{','.join(urls)} answers, but no swarm head recorded its settings there (is it a swarm?)")
        return config

    config = aio.run(swarm_config)
    if config is None:
        return  # stopped by a signal while connecting
    if opts.get("tier") not in (None, config["tier"]):
        raise ConfigError(f"--tier {opts['tier']}: this swarm runs the {config['tier']} tier")
    settings = settings.model_copy(update={"harness": settings.harness.model_copy(update={"tier": config["tier"]})})
    with console.status(f"preparing the {config['tier']} tier's data and tokenizer ..."):
        arena = describe(config["tier"], devices[0], settings.harness, notify=lambda m: console.print(m, highlight=False))
    if arena.fingerprint != config["fingerprint"]:
        raise ConfigError(
            f"this machine's harness fingerprint {arena.fingerprint} differs from the swarm's {config['fingerprint']}: "
            "its fixed harness code, data or tokenizer differ, so its results could not be compared. Install the "
            "same version of swarm as the head (and the same corpus), then join again."
        )
    supervisor = Supervisor()
    node = Node(settings, ",".join(urls), devices, roles, ctx.config, name)
    view = LogView(console) if opts.get("no_view") else LiveView(console, settings)

    async def main() -> None:
        watcher = await connect_watcher(",".join(urls), credentials)
        try:
            best = await watcher.board.best(arena.id)
            console.print(f"joined {','.join(urls)} as {node.name}: arena {arena.id}, current best "
                          f"{best['mean']:.4f} ({best['patch']})" if best and best.get("mean") is not None
                          else f"joined {','.join(urls)} as {node.name}: arena {arena.id}, no best yet", highlight=False)  # fmt: skip
            node.start(supervisor)
            with view:
                await watch(supervisor, watcher, None, None, view)
        finally:
            console.print("[bold]leaving:[/] agents drain and release their claims ...")
            supervisor.stopping = True
            await supervisor.stop("agents", timeout=60)
            await watcher.bus.close()
            console.print(f"{node.name} left the swarm; run the same command to join again")

    try:
        aio.run(main)
    except SwarmError:
        supervisor.kill()
        raise


commands = [join]
