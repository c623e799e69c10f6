"""The agent process: join, work through its role, keep its claims alive, drain, leave.

One OS process per agent. `run()` owns the event loop; `async_run()` is the same for callers
that have one (tests drive agents in burst mode: do N pieces of work, then exit). Stopping
(SIGTERM, Ctrl-C, cancellation, or the end of a burst) cancels the work in hand, releases every
claim still held back to the pool with a reason, publishes AgentLeft and closes the connection:
a claim is never abandoned silently.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from agents.brains import make_brain
from agents.brains.base import Accounting, Brain, Usage
from blackboard.client import Board, Claim, Heartbeat
from blackboard.events import AgentJoined, AgentLeft, UsageRecorded
from swarm.ground import aio
from swarm.ground.bus import Bus
from swarm.ground.constants import STATUS
from swarm.ground.errors import BoardError, BusError
from swarm.ground.settings import Credentials, Settings

log = logging.getLogger(__name__)

STATUS_SECONDS = 2.0  # how often an agent says what it is doing, for status views
BUDGET_REFRESH_SECONDS = 2.0  # how stale the other agents' spend may be when this one asks what is left
CLAIM_RETRY_SECONDS = 2.0  # after a refused or unanswered claim request
T = TypeVar("T")


@dataclass(frozen=True)
class AgentSpec:
    agent: str
    role: type[Role]  # the caller looks the role up (the registry is in `roles`, above this module)
    node: str
    url: str | list[str]
    dir: Path  # the swarm directory: device slots, run directories
    device: str | None = None  # implementers and replicators run on one device
    burst: int | None = None  # do this many pieces of work, then exit


@dataclass
class Context:
    """What a role works with."""

    spec: AgentSpec
    settings: Settings
    board: Board
    brain: Brain | None
    heartbeat: Heartbeat
    done: int = 0  # pieces of work finished
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # set when a burst is complete or a signal came
    doing: str = "starting"
    since: float = field(default_factory=time.time)
    holding: dict[str, asyncio.Future[Any]] = field(default_factory=dict)  # claim -> the work done under it

    def say(self, doing: str) -> None:
        """What this agent is doing now, for `swarm status` and the live view."""
        self.doing, self.since = doing, time.time()
        log.info("%s: %s", self.spec.agent, doing)

    def count(self) -> None:
        """One piece of work is done; in burst mode, the last one ends the agent."""
        self.done += 1
        if self.spec.burst is not None and self.done >= self.spec.burst:
            self.finished.set()

    @property
    def stopping(self) -> bool:
        return self.finished.is_set()

    async def while_held(self, claim: str, work: Awaitable[T]) -> T | None:
        """Do `work` under `claim`; None when the claim was lost meanwhile. The work is then cancelled:
        the board has re-granted it, and finishing it would count one seed twice."""
        task = asyncio.ensure_future(work)
        if claim in self.heartbeat.lost:
            task.cancel()
        self.holding[claim] = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if claim not in self.heartbeat.lost or (current is not None and current.cancelling()):
                raise  # this agent is stopping: not a lost claim
            self.say(f"lost claim {claim} (its lease ran out); cancelled the work done under it")
            return None
        finally:
            self.holding.pop(claim, None)

    async def confirm_claims(self) -> None:
        """Before a result goes out: if a renewal is overdue (an outage, a stopped process), renew now;
        then, if the claim the caller works under is lost, cancel it here rather than send a result the
        board would void. Checked, not left to `claim_lost`'s cancel: Python 3.11's `wait_for` drops a
        cancellation that races a reply, and a request's reply is what brings the news."""
        if self.heartbeat.behind():
            try:
                await self.heartbeat.renew_now()
            except BoardError as exc:  # the result goes out unconfirmed: the board voids it if need be
                log.warning("%s: could not confirm its claims before a result: %s", self.spec.agent, exc)
        current = asyncio.current_task()
        if any(task is current and claim in self.heartbeat.lost for claim, task in self.holding.items()):
            raise asyncio.CancelledError()  # `while_held` says the claim was lost

    def claim_lost(self, claim: str) -> None:
        """The heartbeat's word that `claim` is no longer ours: stop the work done under it."""
        if (task := self.holding.get(claim)) is not None:
            log.warning("%s: lost claim %s; cancelling its work", self.spec.agent, claim)
            task.cancel()

    async def claim(self, kinds: list[str], arenas: list[str], wait: float = 10.0) -> Claim | None:
        """The next piece of work (see `Board.claim`), or None. A refusal or a board that does not answer
        is never fatal: the agent says so, waits a little and the caller asks again."""
        try:
            return await self.board.claim(kinds, arenas, wait=wait)
        except BoardError as exc:
            log.warning("%s: no claim, asking again in %.0f s: %s", self.spec.agent, CLAIM_RETRY_SECONDS, exc)
            self.say(f"waiting for the board: {exc}")
            await asyncio.sleep(CLAIM_RETRY_SECONDS)
            return None

    async def release(self, claim: str, done: bool, reason: str, leaving: bool = False) -> None:
        """Give a claim back: finished (done) or back to the pool; stop renewing it either way.

        If the service cannot be reached, the claim is left to expire, which also returns it."""
        try:
            await self.board.release(claim, done=done, reason=reason, leaving=leaving)
        except BoardError as exc:
            log.warning("%s: could not release %s (it will expire): %s", self.spec.agent, claim, exc)
        self.heartbeat.drop(claim)

    async def release_and_claim(self, claim: str, done: bool, reason: str, kinds: list[str], arenas: list[str],
                                wait: float = 10.0) -> Claim | None:  # fmt: skip
        """`release`, and the next piece of work in the same round trip (`Board.release_and_claim`),
        renewed from now on; None when there is none (or the agent is stopping: then only the release)."""
        if self.stopping:
            await self.release(claim, done, reason)
            return None
        try:
            nxt = await self.board.release_and_claim(claim, done, reason, kinds, arenas, wait=wait)
        except BoardError as exc:
            log.warning("%s: could not hand %s over (it will expire if it was not released): %s", self.spec.agent, claim, exc)
            self.heartbeat.drop(claim)
            return await self.claim(kinds, arenas, wait=wait)
        self.heartbeat.drop(claim)
        if nxt is not None:
            self.heartbeat.hold(nxt.claim)
        return nxt


class Role(ABC):
    name: ClassVar[str]
    uses_brain: ClassVar[bool] = True
    needs_device: ClassVar[bool] = False  # trains on one device: a node gives each agent of it a device slot
    slots_from_last: ClassVar[bool] = False  # ... handed out from the last slot back (away from the first role's)
    slots_per_agent: ClassVar[int] = 1  # a count left unset in the settings: one agent per this many device slots

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @abstractmethod
    async def run(self) -> None:
        """Work until cancelled or `ctx.finished` is set."""


async def async_run(spec: AgentSpec, settings: Settings, signalled: asyncio.Event | None = None) -> int:
    """Run the agent until stopped; returns how many pieces of work it did.

    `signalled`: set on the process's first SIGTERM or SIGINT, beside the cancellation of this task.
    The roles also end their loops on it, and their task is cancelled until it ends: Python 3.11's
    `wait_for` can swallow a cancellation that races a reply, and an agent that did so went on
    claiming and training after its Ctrl-C (seen beside a busy core)."""
    signalled = signalled or asyncio.Event()
    role_class = spec.role
    bus = await Bus.connect(spec.url, name=f"agent {spec.agent}", credentials=Credentials.from_settings(settings.nats), wait=30)
    board = Board(bus, spec.agent, retry_seconds=math.inf)  # an agent waits out any outage of the board
    budget = _Budget(board, settings.brain.budget_usd)
    brain = make_brain(settings.brain, Accounting(on_usage=budget.record, budget_left=budget.left),
                       seed=_seed(spec.agent)) if role_class.uses_brain else None  # fmt: skip
    if brain is not None:
        try:
            await brain.check()  # a model the provider does not know ends the agent now, not each call later
        except BaseException:
            await brain.aclose()
            await bus.close()
            raise
    heartbeat = board.heartbeat(settings.board.lease_seconds / 3)
    ctx = Context(spec, settings, board, brain, heartbeat)
    heartbeat.on_lost = ctx.claim_lost
    await board.publish(AgentJoined(by=spec.agent, agent=spec.agent, role=role_class.name, node=spec.node,
                                    brain=brain.name if brain else None, devices=[spec.device] if spec.device else [],
                                    pid=os.getpid()))  # fmt: skip
    reason = "stopped"
    tasks = [asyncio.create_task(_announce(bus, ctx)), asyncio.create_task(budget.refresh()),
             asyncio.create_task(_finish_on(signalled, ctx))]
    try:
        async with heartbeat:
            work = asyncio.create_task(role_class(ctx).run(), name=f"{role_class.name} {spec.agent}")
            ending = asyncio.create_task(ctx.finished.wait())
            try:
                await asyncio.wait({work, ending}, return_when=asyncio.FIRST_COMPLETED)
                if work.done():
                    work.result()  # a role that returns or fails ends the agent; raise its error
                reason = ("stopped by signal" if signalled.is_set() else
                          "burst complete" if ctx.finished.is_set() else "role ended")  # fmt: skip
            except asyncio.CancelledError:
                reason = "stopped by signal"
                raise
            finally:
                ending.cancel()
                await _cancel_until_done(work)
                await _release_all(ctx, reason)
    except asyncio.CancelledError:
        reason = "stopped by signal"
        raise
    except Exception as exc:
        reason = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.shield(board.publish(AgentLeft(by=spec.agent, agent=spec.agent, reason=reason[:500]), patience=30))
        except BusError as exc:  # stopping during an outage: the board learns it from the expired claims
            log.warning("%s: could not record leaving: %s", spec.agent, exc)
        finally:
            if brain is not None:
                await brain.aclose()  # the SDK's connection pool, closed while the loop still runs
            await bus.close()
    return ctx.done


def run(spec: AgentSpec, settings: Settings) -> int | None:
    """An agent process's main: the event loop, with SIGTERM/SIGINT as a clean stop."""
    signalled = asyncio.Event()
    return aio.run(lambda: async_run(spec, settings, signalled), on_signal=signalled.set)


async def _finish_on(signalled: asyncio.Event, ctx: Context) -> None:
    """A signal ends the roles' loops (`ctx.stopping`) even where its cancellation was swallowed."""
    await signalled.wait()
    ctx.finished.set()


async def _cancel_until_done(task: asyncio.Task[Any]) -> None:
    """Cancel `task`, and again each second until it ends: a cancellation can be swallowed (see `async_run`)."""
    running = not task.done()  # else it ended by itself, and its error (if any) is already raised
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if running and not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("%s: its role failed while stopping: %s: %s", task.get_name(), type(exc).__name__, exc)


async def _release_all(ctx: Context, reason: str) -> None:
    for claim in sorted(ctx.heartbeat.claims):
        await asyncio.shield(ctx.release(claim, done=False, reason=f"agent {ctx.spec.agent}: {reason}", leaving=True))
        log.info("%s: released %s back to the pool", ctx.spec.agent, claim)


async def _announce(bus: Bus, ctx: Context) -> None:
    """Say what this agent is doing every few seconds on core NATS (not stored: it is a view)."""
    while True:
        doing = f"waiting for the board: {ctx.board.waiting}" if ctx.board.waiting else ctx.doing
        status = {"agent": ctx.spec.agent, "role": ctx.spec.role.name, "node": ctx.spec.node, "device": ctx.spec.device,
                  "doing": doing, "since": ctx.since, "done": ctx.done, "at": time.time(),
                  "claims": len(ctx.heartbeat.claims), "connected": bus.link.connected}  # fmt: skip
        try:
            await bus.send(f"{STATUS}.{ctx.spec.agent}", status)
        except BusError as exc:  # a status line is best effort: the next one replaces it
            log.debug("status: %s", exc)
        await asyncio.sleep(STATUS_SECONDS)


def _record(board: Board, agent: str, usage: Usage) -> None:
    event = UsageRecorded(by=agent, agent=agent, provider=usage.provider, model=usage.model,
                          input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_usd=usage.cost_usd)  # fmt: skip
    task = asyncio.get_running_loop().create_task(board.publish(event))
    task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or log.warning("usage not recorded: %s", t.exception()))


class _Budget:
    """What is left of the swarm-wide LLM budget: this agent's own spend, counted the moment a call
    reports it, and the other agents' from the board's usage records (refreshed every few seconds).
    So the swarm overshoots by at most the calls in flight when it runs out, about one per agent."""

    def __init__(self, board: Board, budget: float | None) -> None:
        self.board, self.budget = board, budget
        self.own = 0.0  # this agent's spend, exact
        self.others = 0.0  # the other agents' spend, as of the last refresh

    def left(self) -> float | None:
        return None if self.budget is None else self.budget - self.own - self.others

    def record(self, usage: Usage) -> None:
        """A call's usage: counted at once here, and stored on the board for the others."""
        self.own += usage.cost_usd
        _record(self.board, self.board.agent, usage)

    async def refresh(self) -> None:
        agent = self.board.agent.replace("'", "''")
        sql = f"SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE agent <> '{agent}'"
        failures = 0
        while self.budget is not None:
            try:
                self.others = float((await self.board.query(sql))["rows"][0][0])
                failures = 0
            except BoardError as exc:  # a stale total lets the swarm overshoot: say so
                failures += 1
                log.warning("%s: could not read the swarm's LLM spend (%d times in a row; using %.4f USD): %s",
                            self.board.agent, failures, self.others, exc)  # fmt: skip
            await asyncio.sleep(BUDGET_REFRESH_SECONDS)


def _seed(agent: str) -> int:
    return int.from_bytes(agent.encode()[-8:].rjust(8, b"\0"), "big") % (2**31)
