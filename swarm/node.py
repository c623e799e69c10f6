"""A node: this machine's agents, started and kept running by its supervisor.

`swarm up` runs a node beside its own head; `swarm join URL` runs one against a head elsewhere,
after reading what that head recorded (its tier, ladder and harness fingerprints) and checking that
this machine's harness has the same fingerprint for every tier it serves. A node serves one or more
tiers (the rungs of the swarm's ladder its devices can run): it starts agents per tier, and those
claim only their tier's arena's work; ideators work the lowest rung only, unless
`agents.ideate_upper`, and one reviewer serves every arena. Agents get the swarm's URL on their command line and
its credentials in their environment, so a password never shows in `ps`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.arena import ArenaInfo
from harness import tiers as tier_table
from roles import ROLES
from swarm.ground.bus import Bus
from swarm.ground.errors import ConfigError
from swarm.ground.settings import Credentials, Settings
from swarm.supervisor import Child, Supervisor, swarm_command


@dataclass(frozen=True)
class Plan:
    """Who runs on this node: (role, device) per agent."""

    agents: list[tuple[str, str | None]]

    @classmethod
    def for_devices(cls, settings: Settings, devices: list[str], roles: tuple[str, ...] = tuple(ROLES)) -> Plan:
        """As many agents of each role as the settings say (a count left unset: one per `slots_per_agent`
        device slots of the role, so one implementer per slot and one ideator per 32),
        in the registry's order; a role that needs a device gets the slots in turn (devices shared)."""
        agents: list[tuple[str, str | None]] = []
        for name, role in ROLES.items():
            if name not in roles:
                continue
            count = getattr(settings.agents, f"{name}s")  # the settings count each role under its plural
            if count is None:
                count = -(-len(devices) // role.slots_per_agent)
            if not role.needs_device:
                agents += [(name, None)] * count
            elif role.slots_from_last:
                agents += [(name, devices[-1 - i % len(devices)]) for i in range(count)]
            else:
                agents += [(name, devices[i % len(devices)]) for i in range(count)]
        return cls(agents)


def child_env(settings: Settings, credentials: Credentials) -> dict[str, str]:
    """The settings a child process must share with us, as SWARM_* variables it reads back."""
    env = {
        "SWARM_HARNESS__TIER": settings.harness.tier,
        "SWARM_HARNESS__CACHE_DIR": str(settings.harness.cache_dir),
        "SWARM_HARNESS__CORPUS": settings.harness.corpus,
        "SWARM_HARNESS__TOKENIZER": settings.harness.tokenizer,
        "SWARM_BRAIN__KIND": settings.brain.kind,
    }
    if settings.board.ladder:
        env["SWARM_BOARD__LADDER"] = ",".join(settings.board.ladder)
        lazy = settings.board.lazy_upper and not settings.agents.ideate_upper  # ideators up there need a baseline now
        env["SWARM_BOARD__LAZY_UPPER"] = str(lazy).lower()
    optional = {
        "SWARM_BOARD__MAX_RUNS": settings.board.max_runs,
        "SWARM_HARNESS__SIM_SECONDS": settings.harness.sim_seconds,
        "SWARM_HARNESS__MEMORY_CAP_MB": settings.harness.memory_cap_mb,
    }
    env.update({key: str(value) for key, value in optional.items() if value is not None})
    env.update(credentials.to_env())
    return env


def served_tiers(settings: Settings, devices: list[str]) -> list[str]:
    """The tiers a node serves by default: the ladder's rungs its devices can run (a GPU tier needs
    a GPU), or, without a ladder, the swarm's one tier."""
    if not settings.board.ladder:
        return [settings.harness.tier]
    gpu = any(device.startswith("cuda") for device in devices)
    return [tier for tier in settings.board.ladder if gpu or not tier_table.get(tier).needs_gpu]


def tier_roles(settings: Settings, tier: str, first: bool, roles: tuple[str, ...]) -> tuple[str, ...]:
    """The roles a node runs for one of its tiers: no ideator above the ladder's lowest rung (unless
    `agents.ideate_upper`), and the reviewer (it serves the node's rungs) with the node's first tier only."""
    ladder = settings.board.ladder
    upper = bool(ladder) and tier != ladder[0] and not settings.agents.ideate_upper
    return tuple(role for role in roles if not (role == "ideator" and upper) and not (role == "reviewer" and not first))


class Node:
    def __init__(self, settings: Settings, devices: list[str], roles: tuple[str, ...] = tuple(ROLES),
                 config: Path | None = None, name: str | None = None, tiers: list[str] | None = None) -> None:  # fmt: skip
        self.settings, self.devices, self.roles, self.config = settings, devices, roles, config
        self.name = name or socket.gethostname()
        self.dir = settings.dir.resolve()
        self.tiers = tiers or served_tiers(settings, devices)

    def start(self, supervisor: Supervisor, url: str, credentials: Credentials) -> None:
        """This node's agents, against the swarm at `url` (comma-separated servers): a set per tier."""
        for index, tier in enumerate(self.tiers):
            suffix = f"-{tier}" if len(self.tiers) > 1 else ""
            self._start_tier(supervisor, url, credentials, tier, tier_roles(self.settings, tier, index == 0, self.roles), suffix)

    def _start_tier(self, supervisor: Supervisor, url: str, credentials: Credentials, tier: str,
                    roles: tuple[str, ...], suffix: str) -> None:  # fmt: skip
        env = {**child_env(self.settings, credentials), "SWARM_HARNESS__TIER": tier}
        if self.settings.board.ladder:  # its reviewer takes the candidates of this node's rungs, no other's
            env["SWARM_AGENTS__REVIEW_TIERS"] = ",".join(self.tiers)
        base = ["--config", str(self.config)] if self.config else []
        counts: dict[str, int] = {}
        for role, device in Plan.for_devices(self.settings, self.devices, roles).agents:
            counts[role] = counts.get(role, 0) + 1
            name = f"{role}-{counts[role]}{suffix}"
            args = [*base, "-v", "agent", "--role", role, "--url", url, "--dir", str(self.dir),
                    "--id", f"{name}@{self.name}", "--node", self.name]  # fmt: skip
            if device is not None:
                args += ["--device", device]
            supervisor.add(Child(f"{name}@{self.name}", swarm_command(*args), self.dir / "logs" / f"{name}.log", env))


async def swarm_config(urls: list[str], credentials: Credentials) -> dict[str, Any]:
    """What the head at `urls` recorded for every node to agree with: its tier and harness fingerprint."""
    bus = await Bus.connect(urls, name="swarm join", credentials=credentials, wait=15)
    try:
        config = await bus.swarm_config()
    finally:
        await bus.close()
    if config is None:
        raise ConfigError(f"{','.join(urls)} answers, but no swarm head recorded its settings there (is it a swarm?)")
    return config


def check_fingerprint(arena: ArenaInfo, config: dict[str, Any]) -> None:
    """Refuse to join a swarm whose results this machine's could not be compared with (per rung)."""
    rungs = config.get("rungs") or {config["tier"]: config["fingerprint"]}
    if arena.tier not in rungs:
        raise ConfigError(f"this swarm has no {arena.tier} rung; its tiers are {', '.join(rungs)}")
    if arena.fingerprint != rungs[arena.tier]:
        raise ConfigError(
            f"this machine's {arena.tier} harness fingerprint {arena.fingerprint} differs from the swarm's {rungs[arena.tier]}: "
            "its fixed harness code, data or tokenizer differ, so its results could not be compared. Install the "
            "same version of swarm as the head (and the same corpus), then join again."
        )
