"""`swarm join URL`: add this machine's agents to a running swarm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from swarm.cli import Context
from swarm.cli.up import parse_devices, parse_roles, settings_for, swarm_options
from swarm.ground.errors import ConfigError


def parse_tiers(text: str | None) -> list[str] | None:
    from harness.tiers import TIERS

    if text is None:
        return None
    tiers = [tier.strip() for tier in text.split(",") if tier.strip()]
    unknown = [tier for tier in tiers if tier not in TIERS]
    if unknown or not tiers:
        raise ConfigError(f"--tiers {text!r}: choose from {', '.join(TIERS)}")
    return tiers


@click.command("join")
@click.argument("url")
@swarm_options
@click.option("--nkey", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The swarm's nkey seed file (when the head uses --auth nkey).")
@click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The CA that signed the head's certificate (when the head uses --tls).")
@click.option("--name", default=None, help="This node's name [default: the host name].")
@click.option("--tiers", default=None,
              help="The rungs of the swarm's ladder this node serves, like standard,large [default: those its devices can run].")
@click.pass_obj
def join(ctx: Context, url: str, nkey: Path | None, tls_ca: Path | None, name: str | None, tiers: str | None,
         **opts: Any) -> None:  # fmt: skip
    """Join the swarm at URL with this machine's devices, and work until Ctrl-C.

    URL is what `swarm head` printed (with the password in it, if the head uses one). The node
    checks that its harness (code, data, tokenizer) has the swarm's fingerprint and refuses to
    join otherwise; then it starts its agents, which claim work, run it here and publish the
    results. Ctrl-C drains: claims go back to the pool, and the node can join again later.
    """
    from swarm.credentials import split_urls
    from swarm.ground.settings import Credentials
    from swarm.up import join as join_swarm

    settings = settings_for(ctx, opts)
    given = Credentials.from_settings(settings.nats)
    urls, credentials = split_urls(url, given)  # the password in the URL, or SWARM_NATS__PASSWORD
    credentials = credentials.model_copy(update={"nkey_seed_file": nkey or given.nkey_seed_file, "tls_ca": tls_ca or given.tls_ca})
    roles, devices = parse_roles(opts["roles"]), parse_devices(opts.get("devices"))
    join_swarm(settings, urls, credentials, devices, roles, Console(soft_wrap=True), not opts.get("no_view"),
               opts.get("tier"), ctx.config, name, parse_tiers(tiers))  # fmt: skip


commands = [join]
