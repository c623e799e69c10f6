"""The requests that decide, answered by the leader only: claim, renew, release, verdict; and expiry.

A request's decision is chosen by the writer in its next batch (`Writer.decide`), so two claims in
one batch take distinct work and a release earlier in a batch is seen by a renewal later in it.
A claim request may wait for work (up to `MAX_WAIT`), a verdict request for its decision; both
are woken by what the service's tail applies (`saw`). Claims whose heartbeats stopped expire,
after a grace period that gives every holder one lease on a new leader.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from blackboard import cascade
from blackboard.events import (
    AgentJoined, AgentLeft, ClaimExpired, ClaimGranted, ClaimReleased, ClaimRenewed, Event, HypothesisApproved, HypothesisRejected,
    PatchAccepted, PatchRefused, Released, WorkQueued, new_id,
)  # fmt: skip
from blackboard.reads import text, texts
from blackboard.state import DEVICE_WORK, State, Work
from blackboard.writer import Batch, Writer, not_leading
from swarm.ground.errors import BoardError
from swarm.ground.settings import BoardSettings

log = logging.getLogger(__name__)

MAX_WAIT = 30.0  # longest a claim or verdict request is held open
EXPIRY_CHECK_SECONDS = 0.5
_REMEMBERED_REQUESTS = 10_000  # recent claim requests' answers kept for their retries
_VERDICTS = (HypothesisApproved, HypothesisRejected, PatchAccepted, PatchRefused)


class Requests:
    def __init__(self, writer: Writer, state: State, settings: BoardSettings, instance: str) -> None:
        self.writer, self.state, self.settings, self.instance = writer, state, settings, instance
        self.grace_until = 0.0  # no claim expires before this (a new leader gives holders one lease)
        self.gone: dict[str, float] = {}  # agent -> when it left, or one of its claims expired
        self._asked: dict[str, asyncio.Future[dict[str, Any] | None]] = {}  # claim request id -> its answer
        self.superseded: set[str] = set()  # claims nobody renews: their agent left, or a new process of it joined
        self.left: set[str] = set()  # agents whose process said it left (and no new one has joined since)
        self._work_generation = 0  # bumped whenever work may have become claimable
        self._work_waiters: list[asyncio.Future[None]] = []
        self._verdict_waiters: dict[str, list[asyncio.Future[None]]] = {}

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        return {"claim": self._claim, "renew": self._renew, "rerun": self._rerun, "release": self._release,
                "verdict": self._verdict}  # fmt: skip

    def saw(self, event: Event) -> None:
        """The tail applied `event`: wake the requests waiting for what it brings."""
        if isinstance(event, ClaimGranted) and (released := event.released()) is not None:
            self.saw(released)  # a hand-over's release first
        if isinstance(event, AgentLeft):
            # A leaving agent releases what it holds first, so what its id holds now was granted to a
            # claim request it gave up on while stopping: the reply found nobody, and nobody renews it.
            self.gone[event.agent] = time.time()
            self.left.add(event.agent)
            self.superseded.update(self.state.held.get(event.agent, ()))
        if isinstance(event, AgentJoined):
            # An agent joins before it claims, so what its id holds now was claimed by an earlier
            # process of it (crashed, restarted by its supervisor): nobody renews those claims.
            self.left.discard(event.agent)
            self.superseded.update(self.state.held.get(event.agent, ()))
        if isinstance(event, ClaimGranted) and event.agent in self.left:
            self.superseded.add(event.claim)  # decided before its agent's leaving was seen, stored after it
        if isinstance(event, (WorkQueued, ClaimExpired)) or (isinstance(event, ClaimReleased) and not event.done):
            self._work_generation += 1
            for future in self._work_waiters:
                future.done() or future.set_result(None)
            self._work_waiters.clear()
        if isinstance(event, _VERDICTS):
            for future in self._verdict_waiters.pop(getattr(event, "hypothesis", None) or getattr(event, "patch"), []):
                future.done() or future.set_result(None)

    async def end_orphans(self) -> None:
        """End the claims nobody renews (see `superseded`) now, with no grace: the process that held
        them is gone. Their work goes back to the pool."""
        writer = self.writer
        self.superseded &= self.state.claims.keys()
        for claim_id in sorted(self.superseded):
            async with writer.lock:
                if not writer.leading or (claim := self.state.claims.get(claim_id)) is None:
                    continue
                if claim.agent in self.left:
                    why = f"agent {claim.agent} left before the grant reached it"
                    log.info("%s: claim %s back to the pool: %s", self.instance, claim_id, why)
                    await writer.publish(ClaimReleased(by=self.instance, claim=claim_id, done=False, reason=why))
                else:
                    log.info("%s: claim %s of %s ended: a new process of that agent joined", self.instance,
                             claim_id, claim.agent)  # fmt: skip
                    await writer.publish(ClaimExpired(by=self.instance, claim=claim_id))

    async def expiry_loop(self) -> None:
        writer = self.writer
        while writer.leading:
            await asyncio.sleep(EXPIRY_CHECK_SECONDS)
            now = time.time()
            await self.end_orphans()
            if now < self.grace_until:
                continue
            for claim in self.state.expired(now):
                async with writer.lock:
                    if claim.id in self.state.claims and self.state.claims[claim.id].expires_at <= now:
                        log.info("%s: claim %s of %s expired", self.instance, claim.id, claim.agent)
                        self.gone[claim.agent] = now
                        await writer.publish(ClaimExpired(by=self.instance, claim=claim.id))

    # --- claims ---------------------------------------------------------------------------------

    async def _claim(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A claim request; a retry (the same `request` id: the reply to the first was lost) gets the
        first one's grant back while it is held, rather than a second claim and the first one's work
        blocked for a lease."""
        return await self._once(body, self._claim_new)

    async def _once(self, body: dict[str, Any], ask: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]) -> dict[str, Any] | None:
        """`ask`'s grant for a claim request, or the grant already made for the same `request` id."""
        request = str(body.get("request") or "")
        first = self._asked.get(request)
        if first is None or (first.done() and (first.cancelled() or first.exception() is not None or first.result() is None)):
            first = asyncio.ensure_future(ask(body))  # no answer to give again: a new question
            if request:
                self._asked[request] = first
                while len(self._asked) > _REMEMBERED_REQUESTS:
                    del self._asked[next(iter(self._asked))]
        answer = await asyncio.shield(first)
        if answer is not None and answer["claim"] not in self.state.claims:
            return None  # granted, then released or expired before this retry came
        return answer

    async def _claim_new(self, body: dict[str, Any]) -> dict[str, Any] | None:
        agent = text(body, "agent")
        kinds, arenas = texts(body, "kinds"), texts(body, "arenas")
        asked = time.time()
        deadline = time.monotonic() + min(float(body.get("wait", 0) or 0), MAX_WAIT)
        while True:
            if self.gone.get(agent, 0.0) > asked:
                return None  # asked before it left or its claim expired: nobody is waiting for the answer
            generation = self._work_generation
            grant, seq = await self.writer.decide(lambda batch: self._choose_grant(batch, agent, kinds, arenas))
            if isinstance(grant, ClaimGranted):
                if seq is not None and grant.claim in self.state.claims:
                    return self._describe(self.state.work[grant.work], grant)
                continue  # the grant lost a race with another writer or a fact closing that work: choose again
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if generation != self._work_generation:
                continue  # work came in while we looked
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._work_waiters.append(future)
            try:
                await asyncio.wait_for(future, remaining)
            except asyncio.TimeoutError:
                return None

    def _choose_grant(self, batch: Batch, agent: str, kinds: list[str], arenas: list[str]) -> ClaimGranted | None:
        if not self.writer.leading:
            raise not_leading()
        # an earlier process's claims are ending; one released earlier in the batch is not held
        held = self.state.held.get(agent, set()) - self.superseded - batch.released
        if len(held) + batch.grants.get(agent, 0) >= self.settings.max_claims_per_agent:
            raise BoardError(f"{agent} already holds {self.settings.max_claims_per_agent} claims")
        allowed = kinds if self.state.device_work_left(self.settings.max_runs, batch.device_grants) else [
            kind for kind in kinds if kind not in DEVICE_WORK]  # the run budget is spent  # fmt: skip
        if "implement" in allowed and self._budget_needed_to_finish(batch):
            allowed = [kind for kind in allowed if kind != "implement"]
        work = self._next_work(batch, allowed, arenas)
        if work is None:
            return None
        batch.works.add(work.id)
        batch.grants[agent] = batch.grants.get(agent, 0) + 1
        batch.device_grants += work.kind in DEVICE_WORK
        return ClaimGranted(by=self.instance, claim=new_id("c"), work=work.id, agent=agent,
                            expires_at=time.time() + self.settings.lease_seconds)  # fmt: skip

    def _next_work(self, batch: Batch, kinds: list[str], arenas: list[str]) -> Work | None:
        """The next queued work, passing over the seeds of a hopeless candidate (`State.hopeless`):
        the decision that cancels them may not be stored yet."""
        state, skip = self.state, set(batch.works)
        while (work := state.next_work(kinds, arenas, taken=skip)) is not None:
            if work.kind != "replicate" or state.hopeless(state.patches[work.ref]) is None:
                return work
            skip.add(work.id)
        return None

    def _budget_needed_to_finish(self, batch: Batch) -> bool:
        """Whether the rest of the run budget (`board.max_runs`) is needed to finish what was begun
        (`cascade.runs_to_finish`): then no new idea gets a run, since it could not be decided either."""
        max_runs, state = self.settings.max_runs, self.state
        if max_runs is None:
            return False
        return state.runs_left(max_runs, batch.device_grants) <= cascade.runs_to_finish(state)

    def _held(self, batch: Batch, agent: str, claim_id: str) -> bool:
        """Whether `agent` holds the claim and no decision earlier in the batch releases it."""
        claim = self.state.claims.get(claim_id)
        return claim is not None and claim.agent == agent and claim_id not in batch.released

    async def _renew(self, body: dict[str, Any]) -> dict[str, bool]:
        agent = text(body, "agent")
        claims = list(dict.fromkeys(texts(body, "claims")))

        def choose(batch: Batch, claim_id: str) -> ClaimRenewed | None:
            if not self._held(batch, agent, claim_id):
                return None
            return ClaimRenewed(by=self.instance, claim=claim_id, expires_at=time.time() + self.settings.lease_seconds)

        async def renew(claim_id: str) -> bool:
            stored = await self.writer.decide_stored(lambda batch: choose(batch, claim_id))
            return stored is not None and claim_id in self.state.claims

        return dict(zip(claims, await asyncio.gather(*(renew(claim_id) for claim_id in claims))))

    async def _rerun(self, body: dict[str, Any]) -> bool:
        """Whether the holder of a device claim may start one more run under it (a repair), within the
        swarm's run budget: granted as a renewal that raises the claim's allowance, so the run counts
        against the budget from now on, as a claim's first run counts from its grant."""
        agent, claim_id = text(body, "agent"), text(body, "claim")

        def choose(batch: Batch) -> ClaimRenewed | None:
            claim = self.state.claims.get(claim_id)
            if claim is None or not self._held(batch, agent, claim_id) or claim.allowed > claim.started:
                return None  # not held (refused), or its allowance is not used yet (nothing to decide)
            if not self.state.device_work_left(self.settings.max_runs, batch.device_grants):
                return None
            batch.device_grants += 1
            return ClaimRenewed(by=self.instance, claim=claim_id, expires_at=time.time() + self.settings.lease_seconds,
                                runs=claim.started + 1)  # fmt: skip

        await self.writer.decide_stored(choose)
        claim = self.state.claims.get(claim_id)
        return claim is not None and claim.agent == agent and claim.allowed > claim.started

    async def _release(self, body: dict[str, Any]) -> bool | dict[str, Any] | None:
        """A release; with `then` (a claim request's body), also the agent's next claim: its answer."""
        agent, claim_id = text(body, "agent"), text(body, "claim")
        if body.get("leaving"):
            self.gone[agent] = time.time()  # its pending claim requests must not take the work back
        done, reason = bool(body.get("done")), str(body.get("reason", ""))[:2000]

        def choose(batch: Batch) -> ClaimReleased | None:
            if not self._held(batch, agent, claim_id):
                return None
            batch.released.add(claim_id)
            return ClaimReleased(by=self.instance, claim=claim_id, done=done, reason=reason)

        then = body.get("then")
        if isinstance(then, dict) and not body.get("leaving"):
            return await self._once({**then, "agent": agent}, lambda ask: self._hand_over(choose, ask))
        return await self.writer.decide_stored(choose) is not None

    async def _hand_over(self, release: Callable[[Batch], ClaimReleased | None], body: dict[str, Any]) -> dict[str, Any] | None:
        """A release and its agent's next claim as one decision: a grant that carries the release
        (`ClaimGranted.releasing`), one write. With no work to grant, the release is stored alone and
        the claim asked as any other (`_claim_new`), waiting for work."""
        agent, kinds, arenas = text(body, "agent"), texts(body, "kinds"), texts(body, "arenas")

        def choose(batch: Batch) -> ClaimGranted | ClaimReleased | None:
            released = release(batch)
            try:
                grant = self._choose_grant(batch, agent, kinds, arenas)
            except BoardError:
                if released is None:
                    raise
                grant = None  # at its cap, the release not counted: store the release, then ask afresh
            if grant is None or released is None:
                return grant or released
            return grant.model_copy(update={"releasing": Released(claim=released.claim, done=released.done, reason=released.reason)})

        while True:
            decision, seq = await self.writer.decide(choose)
            if decision is not None and seq is None:
                continue  # not stored (a fact came between, another writer decided first): choose again
            if isinstance(decision, ClaimGranted) and decision.claim in self.state.claims:
                return self._describe(self.state.work[decision.work], decision)
            return await self._claim_new(body)

    # --- verdicts -------------------------------------------------------------------------------

    async def _verdict(self, body: dict[str, Any]) -> dict[str, Any]:
        """The decision on a proposed hypothesis or a submitted patch, waiting for it if need be."""
        item = text(body, "id")
        deadline = time.monotonic() + min(float(body.get("wait", 0) or 0), MAX_WAIT)
        while True:
            record = self.state.hypotheses.get(item) or self.state.patches.get(item)
            if record is not None and record.status not in ("proposed", "submitted"):
                return {"id": item, "status": record.status, "reason": record.reason, "duplicate_of": record.duplicate_of}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {"id": item, "status": "pending" if record else "unknown", "reason": "", "duplicate_of": None}
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._verdict_waiters.setdefault(item, []).append(future)
            try:
                await asyncio.wait_for(future, min(remaining, 1.0))  # re-check at least every second
            except asyncio.TimeoutError:
                pass

    def _describe(self, work: Work, grant: ClaimGranted) -> dict[str, Any]:
        """What the claimant needs to do the work, so it need not ask again."""
        state = self.state
        out: dict[str, Any] = {"claim": grant.claim, "work": work.id, "kind": work.kind, "arena": work.arena,
                               "ref": work.ref, "seed": work.seed, "tier": work.tier, "expires_at": grant.expires_at}  # fmt: skip
        if work.kind == "implement":
            hyp = state.hypotheses[work.ref]
            parent = state.patches.get(hyp.parent or state.arenas[work.arena].baseline_patch)
            out["hypothesis"] = {"id": hyp.id, "title": hyp.title, "rationale": hyp.rationale, "intent": hyp.intent}
            out["parent"] = {"id": parent.id, "code": parent.code} if parent else None
            done = [p for p in map(state.patches.__getitem__, state.patches_of.get(hyp.id, ())) if p.status == "accepted"]
            out["patch"] = {"id": done[0].id, "code": done[0].code, "diff": done[0].diff} if done else None
        else:
            patch = state.patches[work.ref]
            parent = state.patches.get(patch.parent or "")
            out["parent"] = {"id": parent.id, "code": parent.code} if parent else None
            out["patch"] = {"id": patch.id, "code": patch.code, "diff": patch.diff, "parent": patch.parent,
                            "hypothesis": patch.hypothesis, "values": patch.ok_values()}  # fmt: skip
            hyp = state.hypotheses.get(patch.hypothesis or "")
            out["hypothesis"] = {"id": hyp.id, "title": hyp.title, "rationale": hyp.rationale, "intent": hyp.intent} if hyp else None
            out["best"] = {"values": state.best_values(work.arena), "spread": state.spread(work.arena)}
            if work.kind == "transfer":
                out["transfer"] = cascade.plan(state, work.id)
        return out
