"""Running a swarm from this machine: `swarm up` (everything here), `swarm head` (the head here,
nodes elsewhere) and `swarm join` (a node here, the head elsewhere) share this.

A head (nats-server(s), blackboard service(s)) and usually a node of agents beside it start in one
directory that keeps everything; a joining node checks the swarm's tier and fingerprint first. The
watcher shows what happens and notices when to stop: the run budget is spent (`--max-runs`) or the
time is up (`--duration`); else Ctrl-C. All three stop the same way: agents drain first, so every
run they started is finished and recorded; the head (if it is here) summarizes and stops its
services and servers. Starting again on the same directory resumes the same swarm: the stream is the
history.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from agents.arena import ArenaInfo, describe
from agents.brains import check_brain
from blackboard.client import Board
from roles import ROLES
from swarm import cascade
from swarm.ground import aio
from swarm.ground.bus import Bus
from swarm.ground.constants import STATUS
from swarm.ground.errors import BoardError, ConfigError, SwarmError
from swarm.ground.settings import Credentials, Settings
from swarm.head import Head, HeadOptions
from swarm.node import Node, check_fingerprint, child_env, served_tiers, swarm_config
from swarm.supervisor import Supervisor
from swarm.view import LiveView, LogView

log = logging.getLogger(__name__)

REVIEW_GRACE_SECONDS = 120.0  # after the last run, how long reviews still queued may take
WARN_AFTER = 3  # refreshes of the view failed in a row before it says so


def up(settings: Settings, devices: list[str], roles: tuple[str, ...], console: Console, live: bool,
       duration: float | None, options: HeadOptions | None = None, node: bool = True, config: Path | None = None) -> None:  # fmt: skip
    """A head here (`options`: one that nodes elsewhere join) and a node beside it, until a stop condition."""
    aio.run(lambda: check_brain(settings.brain))  # a wrong model name stops it here, with the provider's message
    head = Head(settings, options or HeadOptions(host=settings.nats.host, port=settings.nats.port), config)
    swarm = Swarm(settings, devices, roles, config, head=head, node=node)
    rungs = [prepare(console, settings, devices[0], tier) for tier in settings.board.ladder or [settings.harness.tier]]
    arena, swarm.rungs = rungs[0], {rung.tier: rung.fingerprint for rung in rungs}

    async def hello(watcher: Watcher) -> None:
        console.print(f"swarm in {swarm.dir}: NATS at {swarm.url}, arena {arena.id}, logs in {swarm.dir / 'logs'}",
                      highlight=False)  # fmt: skip
        if settings.board.ladder:
            console.print(f"ladder {' -> '.join(settings.board.ladder)}; this node serves {', '.join(swarm.tiers)}",
                          highlight=False)  # fmt: skip
        if options is not None:
            written = head.write_join_command()
            console.print(f"to add a machine, run there (also in {written}):\n  {head.join_command()}", highlight=False)

    serve(swarm, arena, console, _view(console, settings, live), settings.board.max_runs, duration, hello)


def join(settings: Settings, urls: list[str], credentials: Credentials, devices: list[str], roles: tuple[str, ...],
         console: Console, live: bool, tier: str | None = None, config: Path | None = None, name: str | None = None,
         tiers: list[str] | None = None) -> None:  # fmt: skip
    """A node here, in the swarm at `urls`, serving `tiers` (default: the rungs its devices can run), if
    its harness fingerprint agrees for each, until Ctrl-C."""
    aio.run(lambda: check_brain(settings.brain))
    recorded = aio.run(lambda: swarm_config(urls, credentials))
    if recorded is None:
        return  # stopped by a signal while connecting
    if tier not in (None, recorded["tier"]) and not recorded.get("ladder"):
        raise ConfigError(f"--tier {tier}: this swarm runs the {recorded['tier']} tier")
    board = settings.board.model_copy(update={"ladder": recorded.get("ladder") or []})
    settings = settings.model_copy(update={"board": board, "harness": settings.harness.model_copy(update={"tier": recorded["tier"]})})
    tiers = tiers or served_tiers(settings, devices)
    if not tiers:
        raise ConfigError(f"this machine's devices ({', '.join(devices)}) serve no rung of the ladder {recorded['ladder']}; "
                          "name the tiers to serve with --tiers")  # fmt: skip
    rungs = [prepare(console, settings, devices[0], served) for served in tiers]
    for rung in rungs:
        check_fingerprint(rung, recorded)
    arena = rungs[0]
    swarm = Swarm(settings, devices, roles, config, url=",".join(urls), credentials=credentials, name=name, tiers=tiers)

    async def hello(watcher: Watcher) -> None:
        best = await watcher.board.best(arena.id)
        console.print(f"joined {swarm.url} as {swarm.name}: arena {arena.id}, current best {best['mean']:.4f} ({best['patch']})"
                      if best and best.get("mean") is not None
                      else f"joined {swarm.url} as {swarm.name}: arena {arena.id}, no best yet", highlight=False)  # fmt: skip

    serve(swarm, arena, console, _view(console, settings, live), None, None, hello)


def prepare(console: Console, settings: Settings, device: str, tier: str | None = None) -> ArenaInfo:
    """The data first, in the open: the tiny tier downloads its corpus once, and agents must not wait silently."""
    tier = tier or settings.harness.tier
    with console.status(f"preparing the {tier} tier's data and tokenizer ..."):
        return describe(tier, device, settings.harness, notify=lambda m: console.print(m, highlight=False))


def serve(swarm: Swarm, arena: ArenaInfo, console: Console, view: Any, max_runs: int | None, duration: float | None,
          hello: Callable[[Watcher], Awaitable[None]]) -> None:  # fmt: skip
    """Start, watch until a stop condition or a signal, then stop in order; a second signal or an error kills."""

    async def main() -> None:
        watcher = None
        try:
            await swarm.start_head(arena)
            watcher = await connect_watcher(swarm.url, swarm.credentials)
            await hello(watcher)
            swarm.start_node()
            with view:
                await watch(swarm.supervisor, watcher, max_runs, duration, view, stop)
        finally:
            head = swarm.head is not None
            console.print(f"[bold]{'stopping' if head else 'leaving'}:[/] agents drain and release their claims ...")
            await swarm.stop_agents()
            if watcher is not None:
                try:
                    if head:
                        for line in await summarize(watcher.board, swarm.settings.board.promotion_seeds,
                                                    swarm.settings.board.ladder, swarm.settings.brain.budget_usd):
                            console.print(line, highlight=False)
                except SwarmError as exc:
                    console.print(f"(no summary: {exc})")
                finally:
                    await watcher.bus.close()
            await swarm.stop_services()
            console.print(f"the swarm is stopped; everything is in {swarm.dir} (the same command resumes it)" if head
                          else f"{swarm.name} left the swarm; run the same command to join again")  # fmt: skip

    stop = asyncio.Event()  # set by the first signal: the watch ends even if its cancellation was swallowed
    try:
        aio.run(main, on_signal=stop.set)
    except BaseException:
        swarm.kill()
        raise


def _view(console: Console, settings: Settings, live: bool) -> LiveView | LogView:
    """The live view on a terminal; elsewhere (a pipe, a log file) a line per change, never one final table."""
    return LiveView(console, settings) if live and console.is_terminal else LogView(console)


class Swarm:
    """What runs on this machine: a head, or the URL of one elsewhere; a node of agents unless asked
    otherwise. Started head first, stopped agents first."""

    def __init__(self, settings: Settings, devices: list[str], roles: tuple[str, ...] = tuple(ROLES),
                 config: Path | None = None, head: Head | None = None, node: bool = True, url: str = "",
                 credentials: Credentials | None = None, name: str | None = None, tiers: list[str] | None = None) -> None:  # fmt: skip
        self.settings, self.head = settings, head
        self.node = Node(settings, devices, roles, config, name, tiers) if node else None
        self.tiers = self.node.tiers if self.node else []
        self.rungs: dict[str, str] = {}  # the head's: tier -> harness fingerprint, for joining nodes to check
        self.name = self.node.name if self.node else ""
        self.supervisor = Supervisor()
        self.dir = settings.dir.resolve()
        self.url, self.credentials = url, credentials or Credentials()
        self._keeper: asyncio.Task[None] | None = None  # restarts the head's servers (start_head)

    async def start_head(self, arena: ArenaInfo) -> None:
        """The head's servers and services, if the head is here: then its URL and credentials are ours."""
        if self.head is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.head.start_servers)
        self.url, self.credentials = ",".join(self.head.local_urls()), self.head.credentials
        await self.head.configure(arena, self.rungs)
        self._keeper = asyncio.create_task(self.head.keep_servers(), name="keep nats-server")
        self.head.start_services(self.supervisor, child_env(self.settings, self.credentials))

    def start_node(self) -> None:
        if self.node is not None:
            self.node.start(self.supervisor, self.url, self.credentials)

    async def stop_agents(self) -> None:
        """Agents first: they release their claims while the service still answers."""
        self.supervisor.stopping = True
        await self.supervisor.stop("agents", timeout=60)

    async def stop_services(self) -> None:
        if self.head is not None:
            await self.supervisor.stop("services", timeout=30)
            if self._keeper is not None:  # stopping the servers is no crash to restart them from
                self._keeper.cancel()
                await asyncio.gather(self._keeper, return_exceptions=True)
            await asyncio.to_thread(self.head.stop)

    def kill(self) -> None:
        self.supervisor.kill()
        if self.head is not None:
            self.head.kill()


class Watcher:
    """What the view and the stop conditions need: the board's stats and the agents' status lines."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.board = Board(bus, agent=f"swarm-up-{os.getpid()}", retry_seconds=5)
        self.statuses: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, Any] = {}
        self.recent: list[dict[str, Any]] = []
        self.failures = 0  # refreshes failed in a row
        self.problem: str | None = None  # why the board did not answer, once it failed WARN_AFTER times in a row

    async def start(self) -> None:
        await self.bus.listen(f"{STATUS}.>", lambda body: self.statuses.__setitem__(str(body.get("agent")), body))

    async def refresh(self) -> None:
        """The board's stats and recent runs. Stale numbers would leave --max-runs waiting forever
        unseen, so repeated failures are a warning, in the log and in the view, until it answers."""
        try:
            self.stats = await self.board.stats()
            self.recent = await self.board.history(limit=8)
            await cascade.fill(self.stats, self.board.query)
        except BoardError as exc:
            self.failures += 1
            if self.failures >= WARN_AFTER:
                if self.problem is None:
                    log.warning("the board has not answered %d times in a row: %s", self.failures, exc)
                self.problem = f"the board has not answered for {self.failures} refreshes: {exc}"
            return
        if self.problem is not None:
            log.warning("the board answers again")
        self.failures, self.problem = 0, None

    def service(self) -> dict[str, Any]:
        return self.stats.get("service", {})

    def budget_spent(self) -> bool:
        """The run budget is spent and every run granted has started and finished."""
        service = self.service()
        return (bool(service) and not service.get("run_budget_left", True) and service.get("runs_in_flight", 1) == 0
                and service.get("runs_reserved", 1) == 0)  # fmt: skip

    def reviews_pending(self) -> bool:
        service = self.service()
        return bool(service.get("queues", {}).get("review", 0) or service.get("claimed", {}).get("review", 0))


async def connect_watcher(url: str, credentials: Credentials) -> Watcher:
    bus = await Bus.connect(url.split(","), name="swarm watcher", credentials=credentials, wait=30)
    watcher = Watcher(bus)
    await watcher.start()
    return watcher


async def watch(supervisor: Supervisor, watcher: Watcher, max_runs: int | None, duration: float | None,
                view: Any | None, stop: asyncio.Event | None = None) -> None:  # fmt: skip
    """Supervise and show the swarm until a stop condition or `stop` is set; stopping it is the caller's."""
    supervising = asyncio.create_task(supervisor.watch())
    started = time.monotonic()
    budget_spent_at: float | None = None
    try:
        while stop is None or not stop.is_set():
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
SELECT p.patch, any_value(h.title), count(DISTINCT r.seed) FILTER (WHERE r.status = 'ok')
FROM work w JOIN patches p ON p.patch = w.ref LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis
LEFT JOIN runs r ON r.patch = p.patch AND r.arena = p.arena
WHERE w.work_kind = 'replicate' AND p.patch NOT IN (SELECT patch FROM replications) AND p.patch NOT IN (SELECT patch FROM bests)
GROUP BY p.patch
"""
EXPLORE = """
SELECT min(r.val_bpb), arg_min(h.title, r.val_bpb), (SELECT min(mean) FROM bests WHERE previous IS NULL)
FROM runs r LEFT JOIN hypotheses h ON h.hypothesis = r.hypothesis WHERE r.purpose = 'explore' AND r.status = 'ok'
"""
COUNTS = """
SELECT count(*), count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status = 'running'),
       count(*) FILTER (WHERE status = 'lost'), count(*) FILTER (WHERE status = 'refused')
FROM runs
"""


async def ladder_lines(board: Board, ladder: list[str]) -> list[str]:
    """The cascade in the summary: each rung, each winner's transfer outcome, the transfer rates."""
    if not ladder:
        return []
    lines = []
    for rung in await cascade.rungs(board.query, ladder):
        best = ", ".join(f"{a['arena']} best {a['mean']:.4f}" if a["mean"] is not None else f"{a['arena']} no best yet"
                         for a in rung["arenas"])  # fmt: skip
        lines.append(f"rung {rung['tier']}: {rung['waiting'] or best}")
    for t in await cascade.outcomes(board.query):
        where = f"restacked on {t['lower']}" if t["restack"] else f"{t['lower']} -> {t['upper']}"
        lines.append(f"  {where}: {t['source']} {t['title']!r}: {t['outcome']}: {t['reason'][:300]}")
    lines += await cascade.undecided(board.query, ladder)
    return lines + cascade.rate_lines(await cascade.rates(board.query))


async def summarize(board: Board, seeds: int, ladder: list[str] | None = None,
                    budget_usd: float | None = None) -> list[str]:  # fmt: skip
    """What the swarm found, in a few lines: its promotions (and, on a ladder, what climbed), or why there were none."""
    total, ok, running, lost, refused = (await board.query(COUNTS))["rows"][0]
    failed = total - ok - running - lost - refused  # a lost run never reported: it did not fail
    lines = [f"runs: {total} recorded, {ok} ok, {failed} failed, {lost} lost, {running} unfinished"
             + (f", {refused} refused (another harness)" if refused else "")]  # fmt: skip
    spent = float((await board.query("SELECT coalesce(sum(cost_usd), 0) FROM usage"))["rows"][0][0])
    if budget_usd is not None:
        lines.append(f"LLM spend: {spent:.4f} USD of the {budget_usd:.4f} USD budget" + (
            ": the budget is spent, the brains answered as the offline brain from then on" if spent >= budget_usd else ""))
    elif spent:
        lines.append(f"LLM spend: {spent:.4f} USD")
    promotions = (await board.query(PROMOTIONS))["rows"]
    for arena, patch, mean, std, n, previous, reason, title in promotions:
        lines.append(f"promoted in {arena}: {patch} {title!r}: val_bpb {mean:.4f} +- {std:.4f} over {n} seeds "
                     f"(was {previous:.4f}): {reason}")  # fmt: skip
    climbed = await ladder_lines(board, ladder or [])  # on a ladder: each rung, and what climbed
    unfinished = [f"  {patch} {title!r} was a candidate with {n} of {seeds} seeds when the swarm stopped"
                  for patch, title, n in (await board.query(UNSETTLED))["rows"]]  # fmt: skip
    if promotions:
        return lines + (["left unfinished:", *unfinished] if unfinished else []) + climbed
    lines.append("no promotion, because:")
    for patch, outcome, explanation, title in (await board.query(VERDICTS))["rows"]:
        lines.append(f"  {patch} {title!r}: {outcome}: {explanation}")
    lines += unfinished
    best_explore, title, baseline = (await board.query(EXPLORE))["rows"][0]
    if len(lines) == 2:
        if baseline is None:
            lines.append("  the baseline never finished its seeds, so there was no best to beat")
        elif best_explore is None:
            lines.append("  no exploratory run finished ok")
        else:
            lines.append(f"  no exploratory run beat the baseline's {baseline:.4f} by the minimum gain; "
                         f"the closest was {best_explore:.4f} ({title!r})")  # fmt: skip
    return lines + climbed
