"""The client of the blackboard: what agents and the CLI use.

Facts (a proposal, a patch, a run's result) are published straight to the stream, so they survive
the service being down; questions and claims go to the service by request/reply and are retried
for a while when no service answers (a leader handover takes a few seconds).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from blackboard.events import Event, HypothesisProposed, PatchSubmitted, envelope, new_id
from swarm.ground.bus import Bus
from swarm.ground.constants import REQUEST_SECONDS
from swarm.ground.errors import BoardError, BusUnavailable, ServiceUnavailable

log = logging.getLogger(__name__)


class Verdict(BaseModel):
    """The service's decision on a hypothesis or a patch."""

    model_config = ConfigDict(frozen=True)
    id: str
    status: str  # approved | rejected | accepted | refused | pending | unknown
    reason: str = ""
    duplicate_of: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("approved", "accepted")


class Claim(BaseModel):
    """A granted piece of work, with what is needed to do it."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    claim: str
    work: str
    kind: str
    arena: str
    ref: str
    seed: int | None = None
    tier: str | None = None
    expires_at: float
    hypothesis: dict[str, Any] | None = None
    parent: dict[str, Any] | None = None
    patch: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None  # transfer work: base, change, onto (blackboard.cascade.plan)


class Board:
    """`retry_seconds`: how long a publish or a request is retried while NATS or the service does not
    answer; an agent passes math.inf (it waits out any outage, `waiting` saying why meanwhile)."""

    def __init__(self, bus: Bus, agent: str, retry_seconds: float = 30.0) -> None:
        self.bus, self.agent, self.retry_seconds = bus, agent, retry_seconds
        self.waiting: str | None = None  # why it is waiting for the board, while it is

    async def publish(self, event: Event, patience: float | None = None) -> int:
        """Store a fact on the stream, once: re-published (under its one message id, so stored once)
        until stored, for up to `patience` (default `retry_seconds`)."""
        deadline = time.monotonic() + (self.retry_seconds if patience is None else patience)
        while True:
            try:
                seq = await self.bus.publish(envelope(event))
            except BusUnavailable as exc:
                if time.monotonic() > deadline:
                    raise
                self._wait(str(exc))
                continue
            self._back()
            return seq

    async def ask(self, verb: str, body: dict[str, Any], timeout: float = REQUEST_SECONDS, patience: float | None = None) -> Any:
        """A request to the service, retried while no service answers, for up to `patience` (default
        `retry_seconds`)."""
        deadline = time.monotonic() + (self.retry_seconds if patience is None else patience)
        delay = 0.2
        while True:
            try:
                reply = await self.bus.request(verb, body, timeout=timeout)
            except ServiceUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                self._wait(str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._back()
            return reply

    def _wait(self, why: str) -> None:
        if self.waiting is None:  # loud for a patient board only: an impatient one's caller gets the error
            log.log(self._level, "%s: waiting for the board: %s", self.agent, why)
        self.waiting = why

    def _back(self) -> None:
        if self.waiting is not None:
            log.log(self._level, "%s: the board answers again", self.agent)
            self.waiting = None

    @property
    def _level(self) -> int:
        return logging.WARNING if math.isinf(self.retry_seconds) else logging.DEBUG

    # --- decisions ---------------------------------------------------------------------------

    async def verdict(self, item: str, wait: float = 20.0) -> Verdict:
        return Verdict.model_validate(await self.ask("verdict", {"id": item, "wait": wait}, timeout=wait + 5))

    async def propose(self, event: HypothesisProposed, wait: float = 20.0) -> Verdict:
        await self.publish(event)
        return await self.verdict(event.hypothesis, wait)

    async def submit(self, event: PatchSubmitted, wait: float = 20.0) -> Verdict:
        await self.publish(event)
        return await self.verdict(event.patch, wait)

    async def claim(self, kinds: list[str], arenas: list[str], wait: float = 10.0) -> Claim | None:
        """The next piece of work of one of `kinds` (in that order of preference), or None after `wait`."""
        # One request id for every retry of this request: the service answers a retry with the grant
        # it made for the first (whose reply may have been lost), not with a second one.
        body = {"agent": self.agent, "kinds": kinds, "arenas": arenas, "wait": wait, "request": new_id("q")}
        reply = await self.ask("claim", body, timeout=wait + 5)
        return Claim.model_validate(reply) if reply else None

    async def renew(self, claims: list[str]) -> dict[str, bool]:
        return await self.ask("renew", {"agent": self.agent, "claims": claims}) if claims else {}

    async def rerun(self, claim: str) -> bool:
        """Whether this agent may start one more run (a repair) under its claim: False when the claim is
        no longer its own or the swarm's run budget is spent."""
        return bool(await self.ask("rerun", {"agent": self.agent, "claim": claim}))

    async def release(self, claim: str, done: bool, reason: str = "", leaving: bool = False) -> bool:
        """Give a claim back; `leaving`: this agent is stopping, so its pending claims are void too."""
        body = {"agent": self.agent, "claim": claim, "done": done, "reason": reason, "leaving": leaving}
        # a leaving agent does not wait out an outage: what it cannot release expires
        return bool(await self.ask("release", body, patience=min(self.retry_seconds, 10.0) if leaving else None))

    async def release_and_claim(self, claim: str, done: bool, reason: str, kinds: list[str], arenas: list[str],
                                wait: float = 10.0) -> Claim | None:  # fmt: skip
        """Give a claim back (`release`) and take the next piece of work (`claim`) in one round trip:
        the service chooses both in one batch and stores them together. The next claim, or None."""
        then = {"kinds": kinds, "arenas": arenas, "wait": wait, "request": new_id("q")}
        body = {"agent": self.agent, "claim": claim, "done": done, "reason": reason, "then": then}
        reply = await self.ask("release", body, timeout=wait + 5)
        return Claim.model_validate(reply) if reply else None

    # --- reading the board -------------------------------------------------------------------------

    async def best(self, arena: str) -> dict[str, Any] | None:
        return await self.ask("best", {"arena": arena})

    async def query(self, sql: str, limit: int = 10_000) -> dict[str, Any]:
        return await self.ask("query", {"sql": sql, "limit": limit}, timeout=30)

    async def history(self, **filters: Any) -> list[dict[str, Any]]:
        return await self.ask("history", {k: v for k, v in filters.items() if v is not None}, timeout=30)

    async def show(self, item: str) -> Any:
        return await self.ask("show", {"id": item})

    async def lineage(self, item: str) -> Any:
        return await self.ask("lineage", {"id": item})

    async def stats(self) -> dict[str, Any]:
        return await self.ask("stats", {})

    def heartbeat(self, interval: float, on_lost: Callable[[str], None] | None = None) -> Heartbeat:
        return Heartbeat(self, interval, on_lost)


class Heartbeat:
    """Renews the claims it holds every `interval` seconds while in use (`async with`).

    A claim the service says is no longer ours is dropped and reported to `on_lost`; while no
    service answers, the claims are kept and renewal is tried again (a new leader gives them a
    lease's grace)."""

    def __init__(self, board: Board, interval: float, on_lost: Callable[[str], None] | None) -> None:
        self.board, self.interval, self.on_lost = board, interval, on_lost
        self.claims: set[str] = set()
        self.lost: set[str] = set()
        self.confirmed = time.monotonic()  # when the board last answered a renewal (or none was needed)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._beat(), name=f"heartbeat {self.board.agent}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def hold(self, claim: str) -> None:
        self.claims.add(claim)

    def drop(self, claim: str) -> None:
        self.claims.discard(claim)

    def behind(self) -> bool:
        """Whether a renewal is overdue (the board did not answer, or this process was stopped): a claim
        held now may have expired meanwhile."""
        return bool(self.claims) and time.monotonic() - self.confirmed > 1.5 * self.interval

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.claims:
                self.confirmed = time.monotonic()
                continue
            try:
                await self.renew_now()
            except BoardError as exc:
                log.warning("%s: renewal failed, will retry: %s", self.board.agent, exc)

    async def renew_now(self) -> None:
        """Renew every claim held, now; those the service says are no longer ours are dropped and
        reported to `on_lost`. BoardError when the board does not answer."""
        result = await self.board.renew(sorted(self.claims))
        self.confirmed = time.monotonic()
        for claim, held in result.items():
            if not held and claim in self.claims:
                self.claims.discard(claim)
                self.lost.add(claim)
                log.warning("%s: lost claim %s", self.board.agent, claim)
                if self.on_lost is not None:
                    self.on_lost(claim)
