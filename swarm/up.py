"""Running a swarm from this machine: `swarm up` (everything here) and `swarm head` (the head here,
nodes elsewhere) share this.

A head (nats-server(s), blackboard service(s)) and usually a node of agents beside it start in one
directory that keeps everything; the watcher shows what happens and notices when to stop: the run
budget is spent (`--max-runs`) or the time is up (`--duration`). Agents drain first, so every
run they started is finished and recorded, then the services and servers stop. Starting again on
the same directory resumes the same swarm: the stream is the history.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from agents.arena import ArenaInfo
from blackboard.client import Board
from swarm.ground.bus import Bus, Credentials
from swarm.ground.constants import STATUS
from swarm.ground.errors import BoardError, SwarmError
from swarm.head import Head, HeadOptions
from roles import ROLES
from swarm.node import Node, child_env
from swarm.ground.settings import Settings
from swarm.supervisor import Supervisor

log = logging.getLogger(__name__)

REVIEW_GRACE_SECONDS = 120.0  # after the last run, how long reviews still queued may take


class Swarm:
    """A head, and a node beside it unless asked otherwise, on this machine; stopped in order."""

    def __init__(self, settings: Settings, devices: list[str], options: HeadOptions | None = None,
                 node: bool = True, roles: tuple[str, ...] = tuple(ROLES), config: Path | None = None) -> None:  # fmt: skip
        self.settings, self.devices, self.node, self.roles, self.config = settings, devices, node, roles, config
        self.head = Head(settings, options or HeadOptions(host=settings.nats.host, port=settings.nats.port), config)
        self.supervisor = Supervisor()
        self.dir = settings.dir.resolve()
        self.url = ""

    async def start(self, arena: ArenaInfo) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.head.start_servers)
        self.url = ",".join(self.head.local_urls())
        await self.head.configure(arena)
        creds = self.head.local_credentials()
        nats = self.settings.nats.model_copy(update={"user": creds.user, "password": creds.password,
                                                     "nkey_seed_file": creds.nkey_seed_file, "tls_ca": creds.tls_ca})  # fmt: skip
        children = self.settings.model_copy(update={"nats": nats})
        self.head.start_services(self.supervisor, child_env(children))
        if self.node:
            Node(children, self.url, self.devices, self.roles, self.config).start(self.supervisor)

    async def stop_agents(self) -> None:
        """Agents first: they release their claims while the service still answers."""
        self.supervisor.stopping = True
        await self.supervisor.stop("agents", timeout=60)

    async def stop_services(self) -> None:
        await self.supervisor.stop("services", timeout=30)
        await asyncio.to_thread(self.head.stop)

    def kill(self) -> None:
        self.supervisor.kill()
        self.head.kill()


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


async def connect_watcher(url: str, credentials: Credentials) -> Watcher:
    bus = await Bus.connect(url.split(","), name="swarm watcher", credentials=credentials, wait=30)
    watcher = Watcher(bus)
    await watcher.start()
    return watcher


async def watch(supervisor: Supervisor, watcher: Watcher, max_runs: int | None, duration: float | None,
                view: Any | None) -> None:  # fmt: skip
    """Supervise and show the swarm until a stop condition; stopping it is the caller's."""
    supervising = asyncio.create_task(supervisor.watch())
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
