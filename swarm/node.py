"""A node: this machine's agents, started and kept running by its supervisor.

`swarm up` runs a node beside its own head; `swarm join URL` runs one against a head elsewhere.
Agents get the swarm's URL on their command line and its credentials in their environment, so a
password never shows in `ps`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from roles import ROLES
from swarm.ground.settings import NatsSettings, Settings
from swarm.supervisor import Child, Supervisor, swarm_command


@dataclass(frozen=True)
class Plan:
    """Who runs on this node: (role, device) per agent."""

    agents: list[tuple[str, str | None]]

    @classmethod
    def for_devices(cls, settings: Settings, devices: list[str], roles: tuple[str, ...] = tuple(ROLES)) -> Plan:
        """As many agents of each role as the settings say (a count left unset: one per device slot),
        in the registry's order; a role that needs a device gets the slots in turn (devices shared)."""
        agents: list[tuple[str, str | None]] = []
        for name, role in ROLES.items():
            if name not in roles:
                continue
            count = getattr(settings.agents, f"{name}s")  # the settings count each role under its plural
            count = len(devices) if count is None else count
            if not role.needs_device:
                agents += [(name, None)] * count
            elif role.slots_from_last:
                agents += [(name, devices[-1 - i % len(devices)]) for i in range(count)]
            else:
                agents += [(name, devices[i % len(devices)]) for i in range(count)]
        return cls(agents)


def child_env(settings: Settings) -> dict[str, str]:
    """The settings a child process must share with us, as SWARM_* variables it reads back."""
    env = {
        "SWARM_HARNESS__TIER": settings.harness.tier,
        "SWARM_HARNESS__CACHE_DIR": str(settings.harness.cache_dir),
        "SWARM_HARNESS__CORPUS": settings.harness.corpus,
        "SWARM_HARNESS__TOKENIZER": settings.harness.tokenizer,
        "SWARM_BRAIN__KIND": settings.brain.kind,
    }
    optional = {
        "SWARM_BOARD__MAX_RUNS": settings.board.max_runs,
        "SWARM_HARNESS__SIM_SECONDS": settings.harness.sim_seconds,
        "SWARM_HARNESS__MEMORY_CAP_MB": settings.harness.memory_cap_mb,
    }
    env.update({key: str(value) for key, value in optional.items() if value is not None})
    env.update(credential_env(settings.nats))
    return env


def credential_env(nats: NatsSettings) -> dict[str, str]:
    values = {"USER": nats.user, "PASSWORD": nats.password, "NKEY_SEED_FILE": nats.nkey_seed_file,
              "TLS_CA": nats.tls_ca, "TLS_CERT": nats.tls_cert, "TLS_KEY": nats.tls_key}  # fmt: skip
    return {f"SWARM_NATS__{key}": str(value) for key, value in values.items() if value is not None}


class Node:
    def __init__(self, settings: Settings, url: str, devices: list[str], roles: tuple[str, ...] = tuple(ROLES),
                 config: Path | None = None, name: str | None = None) -> None:  # fmt: skip
        self.settings, self.url, self.devices, self.roles, self.config = settings, url, devices, roles, config
        self.name = name or socket.gethostname()
        self.dir = settings.dir.resolve()

    def start(self, supervisor: Supervisor) -> None:
        env = child_env(self.settings)
        base = ["--config", str(self.config)] if self.config else []
        counts: dict[str, int] = {}
        for role, device in Plan.for_devices(self.settings, self.devices, self.roles).agents:
            counts[role] = counts.get(role, 0) + 1
            name = f"{role}-{counts[role]}"
            args = [*base, "-v", "agent", "--role", role, "--url", self.url, "--dir", str(self.dir),
                    "--id", f"{name}@{self.name}", "--node", self.name]  # fmt: skip
            if device is not None:
                args += ["--device", device]
            supervisor.add(Child(f"{name}@{self.name}", swarm_command(*args), self.dir / "logs" / f"{name}.log", env))
