"""`swarm up`: a whole swarm on this machine, in one directory that keeps everything.

It starts the bundled nats-server (JetStream, on loopback, its store under the swarm directory),
a blackboard service and the node's agents, shows the live view, and stops by itself when the run
budget is spent (`--max-runs`) or the time is up (`--duration`): agents drain first, so every
run they started is finished and recorded, then the service and the server stop. Running it again
on the same directory resumes the same swarm: the stream is the history.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blackboard.client import Board
from swarm.bus import Bus, Credentials
from swarm.constants import STATUS
from swarm.errors import BoardError, SwarmError
from swarm.natsserver import NatsServer
from swarm.settings import Settings
from swarm.supervisor import Child, Supervisor, swarm_command

log = logging.getLogger(__name__)

REVIEW_GRACE_SECONDS = 120.0  # after the last run, how long reviews still queued may take


@dataclass(frozen=True)
class Plan:
    """Who runs on this node."""

    roles: list[tuple[str, str | None]]  # (role, device) per agent

    @classmethod
    def for_devices(cls, settings: Settings, devices: list[str]) -> Plan:
        """One implementer per device slot, the other roles as the settings say (devices shared)."""
        counts = settings.agents
        roles: list[tuple[str, str | None]] = [("ideator", None)] * counts.ideators
        implementers = counts.implementers if counts.implementers is not None else len(devices)
        roles += [("implementer", devices[i % len(devices)]) for i in range(implementers)]
        roles += [("reviewer", None)] * counts.reviewers
        roles += [("replicator", devices[-1 - i % len(devices)]) for i in range(counts.replicators)]
        return cls(roles)


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
    return env


class Swarm:
    """The processes of a local swarm, and how to stop them in order."""

    def __init__(self, settings: Settings, devices: list[str], config: Path | None = None) -> None:
        self.settings, self.devices, self.config = settings, devices, config
        self.dir = settings.dir.resolve()
        self.server: NatsServer | None = None
        self.supervisor = Supervisor()
        self.url = settings.nats.url or ""
        self.node = socket.gethostname()

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.settings.nats.url:
            self.server = NatsServer(dir=self.dir / "nats", host=self.settings.nats.host, port=self.settings.nats.port).start()
            self.url = self.server.url
        env = child_env(self.settings)
        base = ["--config", str(self.config)] if self.config else []
        logs = self.dir / "logs"
        self.supervisor.add(Child("service", swarm_command(*base, "-v", "service", "--url", self.url, "--db",
                                                           str(self.dir / "board.duckdb"), "--instance", f"{self.node}-service"),
                                  logs / "service.log", env, group="services"))  # fmt: skip
        counts: dict[str, int] = {}
        for role, device in Plan.for_devices(self.settings, self.devices).roles:
            counts[role] = counts.get(role, 0) + 1
            name = f"{role}-{counts[role]}"
            args = [*base, "-v", "agent", "--role", role, "--url", self.url, "--dir", str(self.dir),
                    "--id", f"{name}@{self.node}", "--node", self.node]  # fmt: skip
            if device is not None:
                args += ["--device", device]
            self.supervisor.add(Child(name, swarm_command(*args), logs / f"{name}.log", env))

    async def stop_agents(self) -> None:
        """Agents first: they release their claims while the service still answers."""
        self.supervisor.stopping = True
        await self.supervisor.stop("agents", timeout=60)

    async def stop_services(self) -> None:
        await self.supervisor.stop("services", timeout=30)
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)

    def kill(self) -> None:
        self.supervisor.kill()
        if self.server is not None:
            self.server.kill()


class Watcher:
    """What the view and the stop conditions need: the board's stats and the agents' status lines."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.board = Board(bus, agent=f"swarm-up-{os.getpid()}", retry_seconds=5)
        self.statuses: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, Any] = {}
        self.recent: list[dict[str, Any]] = []

    async def start(self) -> None:
        await self.bus.listen(f"{STATUS}.>", lambda body: self.statuses.__setitem__(str(body.get("agent")), body))

    async def refresh(self) -> None:
        try:
            self.stats = await self.board.stats()
            self.recent = await self.board.history(limit=8)
        except BoardError as exc:
            log.debug("refresh: %s", exc)

    def service(self) -> dict[str, Any]:
        return self.stats.get("service", {})

    def budget_spent(self) -> bool:
        """The run budget is spent and every run that was started has finished."""
        service = self.service()
        return bool(service) and not service.get("run_budget_left", True) and service.get("runs_in_flight", 1) == 0

    def reviews_pending(self) -> bool:
        service = self.service()
        return bool(service.get("queues", {}).get("review", 0) or service.get("claimed", {}).get("review", 0))


async def connect_watcher(swarm: Swarm) -> Watcher:
    bus = await Bus.connect(swarm.url, name="swarm up", credentials=Credentials.from_settings(swarm.settings.nats), wait=30)
    watcher = Watcher(bus)
    await watcher.start()
    return watcher


async def watch(swarm: Swarm, watcher: Watcher, max_runs: int | None, duration: float | None, view: Any | None) -> None:
    """Supervise and show the swarm until a stop condition; stopping it is the caller's."""
    supervising = asyncio.create_task(swarm.supervisor.watch())
    started = time.monotonic()
    budget_spent_at: float | None = None
    try:
        while True:
            await watcher.refresh()
            if view is not None:
                view.update(watcher, time.monotonic() - started)
            if duration is not None and time.monotonic() - started >= duration:
                return
            if max_runs is not None and watcher.budget_spent():
                budget_spent_at = budget_spent_at or time.monotonic()
                if not watcher.reviews_pending() or time.monotonic() - budget_spent_at > REVIEW_GRACE_SECONDS:
                    return
            if supervising.done():
                supervising.result()
                raise SwarmError("the supervisor stopped unexpectedly")
            await asyncio.sleep(1.0)
    finally:
        supervising.cancel()
        await asyncio.gather(supervising, return_exceptions=True)


PROMOTIONS = """
SELECT b.arena, b.patch, b.mean, b.std, b.n, b.previous_mean, b.reason, h.title
FROM bests b LEFT JOIN patches p ON p.patch = b.patch LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis
WHERE b.previous IS NOT NULL ORDER BY b.seq
"""
VERDICTS = """
SELECT r.patch, r.outcome, r.explanation, h.title
FROM replications r LEFT JOIN patches p ON p.patch = r.patch LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis
ORDER BY r.seq
"""
UNSETTLED = """
SELECT p.patch, any_value(h.title), count(r.run) FILTER (WHERE r.status = 'ok')
FROM work w JOIN patches p ON p.patch = w.ref LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis
LEFT JOIN runs r ON r.patch = p.patch AND r.arena = p.arena
WHERE w.work_kind = 'replicate' AND p.patch NOT IN (SELECT patch FROM replications) AND p.patch NOT IN (SELECT patch FROM bests)
GROUP BY p.patch
"""
EXPLORE = """
SELECT min(r.val_bpb), arg_min(h.title, r.val_bpb), (SELECT min(mean) FROM bests WHERE previous IS NULL)
FROM runs r LEFT JOIN hypotheses h ON h.hypothesis = r.hypothesis WHERE r.purpose = 'explore' AND r.status = 'ok'
"""
COUNTS = "SELECT count(*), count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status = 'running') FROM runs"


async def summarize(board: Board, seeds: int) -> list[str]:
    """What the swarm found, in a few lines: its promotions, or why there were none."""
    total, ok, running = (await board.query(COUNTS))["rows"][0]
    lines = [f"runs: {total} recorded, {ok} ok, {total - ok - running} failed, {running} unfinished"]
    promotions = (await board.query(PROMOTIONS))["rows"]
    for arena, patch, mean, std, n, previous, reason, title in promotions:
        lines.append(f"promoted in {arena}: {patch} {title!r}: val_bpb {mean:.4f} +- {std:.4f} over {n} seeds "
                     f"(was {previous:.4f}): {reason}")  # fmt: skip
    if promotions:
        return lines
    lines.append("no promotion, because:")
    for patch, outcome, explanation, title in (await board.query(VERDICTS))["rows"]:
        lines.append(f"  {patch} {title!r}: {outcome}: {explanation}")
    for patch, title, n in (await board.query(UNSETTLED))["rows"]:
        lines.append(f"  {patch} {title!r} was a candidate with {n} of {seeds} seeds when the run budget ran out")
    best_explore, title, baseline = (await board.query(EXPLORE))["rows"][0]
    if len(lines) == 2:
        if baseline is None:
            lines.append("  the baseline never finished its seeds, so there was no best to beat")
        elif best_explore is None:
            lines.append("  no exploratory run finished ok")
        else:
            lines.append(f"  no exploratory run beat the baseline's {baseline:.4f} by the minimum gain; "
                         f"the closest was {best_explore:.4f} ({title!r})")  # fmt: skip
    return lines
