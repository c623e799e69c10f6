"""The blackboard service: the single writer of decisions, and the reader of the board for others.

Every instance tails the stream into its decision state (memory) and its DuckDB projection (file),
and answers read requests. One instance at a time is the leader: it holds the leader lease and
answers the requests that decide (claim, renew, release, verdict), decides what the stream's facts
call for, and expires claims whose heartbeats stopped. Each decision is published with the
expected-sequence guard and applied back from the stream before the next one is made, so a second
leader (a partitioned old one, say) can never write over a decision it has not seen.

Requests that decide are batched: while one batch is being stored, the next queues up, and the
writer decides it whole under the lock, each decision taking nothing that an earlier one in the
batch took (work, a claim's release). On a stream of one server the batch is stored in one round
trip as a chain (`Bus.publish_chain`): the first decision carries the expected-sequence guard, each
later one the id of the one before it as the stream's expected last message, so nothing, and no
other writer's decision, is stored between two links.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blackboard import queries
from blackboard.events import (
    AgentLeft, ClaimExpired, ClaimGranted, ClaimReleased, ClaimRenewed, Decision, DecodeError, Event, HypothesisApproved,
    HypothesisRejected, LeaderElected, Message, PatchAccepted, PatchRefused, WorkQueued, decode, envelope, new_id,
)  # fmt: skip
from blackboard.projection import Projection
from blackboard.state import DEVICE_WORK, State, Work
from swarm.ground.bus import Bus, Credentials, LeaderLease, SequenceConflict
from swarm.ground.constants import LEADER_TTL_SECONDS
from swarm.ground.errors import BoardError, BusError
from swarm.ground.settings import BoardSettings, Settings

log = logging.getLogger(__name__)

MAX_WAIT = 30.0  # longest a claim or verdict request is held open
FLUSH_SECONDS = 0.05  # projection lag behind the decision state, at most about this
EXPIRY_CHECK_SECONDS = 0.5
MAX_BATCH = 64  # decisions stored in one round trip; more wait for the next one
_VERDICTS = (HypothesisApproved, HypothesisRejected, PatchAccepted, PatchRefused)


@dataclass
class _Batch:
    """What the decisions chosen so far in one batch take, so that later ones in it do not take it too."""

    works: set[str] = field(default_factory=set)  # granted
    grants: dict[str, int] = field(default_factory=dict)  # agent -> claims granted to it
    device_grants: int = 0
    released: set[str] = field(default_factory=set)  # claims


Choose = Callable[[_Batch], Decision | None]  # a request's decision given its batch so far, or None: none needed


class Service:
    def __init__(self, bus: Bus, projection: Projection, settings: BoardSettings, instance: str) -> None:
        self.bus, self.projection, self.settings, self.instance = bus, projection, settings, instance
        self.state = State(settings)
        self.leader = False
        self.lock = asyncio.Lock()  # one decision at a time: choose, publish, see it applied
        self.seen_seq = 0  # last stream sequence received (decoded or parked)
        self.buffer: list[tuple[int, Event | Message]] = []  # received, not yet in the projection
        self.flushing = asyncio.Lock()
        self.grace_until = 0.0  # no claim expires before this (a new leader gives holders one lease)
        self._seq_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()
        self._verdict_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._work_generation = 0  # bumped whenever work may have become claimable
        self._work_waiters: list[asyncio.Future[None]] = []
        self._lease: LeaderLease | None = None
        self._chained = False  # store a batch as one chain (the stream has one replica)
        self._jobs: list[tuple[Choose, asyncio.Future[tuple[Decision | None, int | None]]]] = []
        self._jobs_queued = asyncio.Event()
        self._decided: dict[str, int] = {}  # recent decisions' event ids -> stream sequence
        self._gone: dict[str, float] = {}  # agent -> when it left, or one of its claims expired
        self._kick = asyncio.Event()
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._leader_stops: list[Callable[[], Awaitable[None]]] = []
        self.ready = asyncio.Event()  # set once caught up with the stream as it was at start

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled."""
        await self.bus.ensure_stream()
        target = await self.bus.last_seq()
        reads = [await self.bus.serve(verb, handler) for verb, handler in self._read_handlers().items()]
        tasks = [asyncio.create_task(self._tail(), name="tail"), asyncio.create_task(self._flush_loop(), name="flush")]
        try:
            await self._until_failed(tasks, self._wait_applied(target))
            await self.flush()
            self.ready.set()
            log.info("%s: caught up at sequence %d", self.instance, target)
            await self._until_failed(tasks, self._lease_loop())
        finally:
            if self.leader and self._lease is not None:
                await self._step_down("stopping")
                try:
                    await self._lease.release()  # the standby need not wait out the TTL
                except BusError as exc:
                    log.warning("%s: could not release the leader lease: %s", self.instance, exc)
            for stop in reads:
                await stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.flush()

    @staticmethod
    async def _until_failed(tasks: list[asyncio.Task[None]], work: Awaitable[None]) -> None:
        """Await `work`; if a background task (the tail, the flusher) ends first, raise its error."""
        main = asyncio.ensure_future(work)
        try:
            await asyncio.wait({main, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done():
                    task.result()
                    raise BoardError(f"the service's {task.get_name()} task stopped")
            await main
        finally:
            main.cancel()

    async def _tail(self) -> None:
        async for seq, message in self.bus.tail(self.state.applied_seq + 1):
            item: Event | Message = message  # the projection parks what does not decode, with the reason
            try:
                event = item = decode(message.data, message.subject)
            except DecodeError as exc:
                log.warning("%s: event %d parked: %s", self.instance, seq, exc)
            else:
                self.state.apply(event, seq)
                if isinstance(event, Decision):
                    self._decided[event.id] = seq
                    if len(self._decided) > 10_000:
                        del self._decided[next(iter(self._decided))]
                if isinstance(event, AgentLeft):
                    self._gone[event.agent] = time.time()
                if isinstance(event, (WorkQueued, ClaimExpired)) or (isinstance(event, ClaimReleased) and not event.done):
                    self._work_generation += 1
                    for future in self._work_waiters:
                        future.done() or future.set_result(None)
                    self._work_waiters.clear()
                if isinstance(event, _VERDICTS):
                    for future in self._verdict_waiters.pop(getattr(event, "hypothesis", None) or getattr(event, "patch"), []):
                        future.done() or future.set_result(None)
                if self.leader and self.state.pending:
                    self._kick.set()
            self.seen_seq = seq
            self.buffer.append((seq, item))
            while self._seq_waiters and self._seq_waiters[0][0] <= seq:
                future = heapq.heappop(self._seq_waiters)[2]
                future.done() or future.set_result(None)

    async def _wait_applied(self, seq: int) -> None:
        if self.seen_seq >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._seq_waiters, (seq, next(self._tiebreak), future))
        await future

    async def flush(self) -> None:
        """Everything received so far into the projection (reads call this first)."""
        async with self.flushing:
            batch, self.buffer = self.buffer, []
            if batch:
                await _in_thread(self.projection.apply_many, batch)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    # --- leadership --------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        lease = self._lease = await self.bus.leader_lease()
        last_refresh = 0.0
        while True:
            try:
                if not self.leader:
                    if await lease.acquire(self.instance):
                        last_refresh = time.monotonic()
                        await self._become_leader()
                elif await lease.refresh(self.instance):
                    last_refresh = time.monotonic()
                    self._chained = await self.bus.stream_replicas() == 1
                else:
                    await self._step_down("the leader lease was taken over")
            except BusError as exc:  # the bus is down or reconnecting: try again in a second
                log.warning("%s: leader lease: %s", self.instance, exc)
            if self.leader and time.monotonic() - last_refresh > LEADER_TTL_SECONDS - 2:
                await self._step_down("could not refresh the leader lease in time")
            await asyncio.sleep(1.0)

    async def _become_leader(self) -> None:
        self._chained = await self.bus.stream_replicas() == 1
        await self._wait_applied(await self.bus.last_seq())
        self.grace_until = time.time() + self.settings.lease_seconds
        async with self.lock:
            self.leader = True
            if await self._publish(LeaderElected(by=self.instance, instance=self.instance)) is None:
                self.leader = False
                return
        log.warning("%s: leading the blackboard", self.instance)
        for verb, handler in self._decision_handlers().items():
            self._leader_stops.append(await self.bus.serve(verb, handler))
        self._leader_tasks = [asyncio.create_task(self._decide_loop()), asyncio.create_task(self._expiry_loop()),
                              asyncio.create_task(self._write_loop())]  # fmt: skip
        self._kick.set()

    async def _step_down(self, why: str) -> None:
        if not self.leader:
            return
        self.leader = False
        log.warning("%s: no longer leading: %s", self.instance, why)
        for stop in self._leader_stops:
            try:
                await stop()
            except BusError as exc:  # unsubscribing over a dead connection
                log.debug("unsubscribe: %s", exc)
        for task in self._leader_tasks:
            task.cancel()
        await asyncio.gather(*self._leader_tasks, return_exceptions=True)
        self._leader_stops, self._leader_tasks = [], []
        jobs, self._jobs = self._jobs, []
        for _, future in jobs:
            future.done() or future.set_exception(BoardError("this service stopped leading; ask again"))

    async def _publish(self, decision: Decision) -> int | None:
        """Publish one decision (the lock held) and wait until the state has applied it.

        None if another writer decided first: the state has then caught up, decide afresh."""
        if decision.by != self.instance:  # the state's decisions are signed by whoever publishes them
            decision = decision.model_copy(update={"by": self.instance})
        try:
            seq = await self.bus.publish(envelope(decision), expect_decision_seq=self.state.decision_seq)
        except SequenceConflict as exc:
            await self._wait_applied(await self.bus.last_seq())
            if (seq := self._decided.get(decision.id)) is not None:
                return seq  # our own write, stored by an attempt whose acknowledgement was lost
            log.warning("%s: %s; caught up, deciding again", self.instance, exc)
            return None
        await self._wait_applied(seq)
        return seq

    async def _publish_batch(self, decisions: list[Decision]) -> list[int | None]:
        """Publish decisions chosen together (the lock held) and wait until the state has applied them;
        each one's sequence, or None where it was not stored: decide that one afresh."""
        if len(decisions) < 2 or not self._chained:
            return [await self._publish(decision) for decision in decisions]
        seqs = await self.bus.publish_chain([envelope(d) for d in decisions], expect_decision_seq=self.state.decision_seq)
        if None not in seqs:
            await self._wait_applied(max(s for s in seqs if s is not None))
            return seqs
        # The chain broke (a fact came between, or another writer decided first) or an acknowledgement
        # was lost: what the stream holds says which of ours are stored.
        await self._wait_applied(await self.bus.last_seq())
        stored = [seq if seq is not None else self._decided.get(decision.id) for decision, seq in zip(decisions, seqs)]
        log.debug("%s: %d of %d chained decisions stored; deciding the rest again", self.instance,
                  len(stored) - stored.count(None), len(stored))  # fmt: skip
        return stored

    async def _decide(self, choose: Choose) -> tuple[Decision | None, int | None]:
        """Have the writer `choose` this request's decision in its next batch and store it.

        (None, None) when `choose` found no decision to make; (decision, None) when it was not
        stored (another writer decided first, or a fact came between): choose again."""
        if not self.leader:
            raise BoardError("this service stopped leading; ask again")
        future: asyncio.Future[tuple[Decision | None, int | None]] = asyncio.get_running_loop().create_future()
        self._jobs.append((choose, future))
        self._jobs_queued.set()
        return await future

    async def _decide_stored(self, choose: Choose) -> Decision | None:
        """`_decide` until the decision is stored (or none is needed: None)."""
        while True:  # not stored (a fact came between, say): decide again
            decision, seq = await self._decide(choose)
            if decision is None or seq is not None:
                return decision

    async def _write_loop(self) -> None:
        """Decide and store the queued requests a batch at a time: while one is stored, the next queues."""
        while self.leader:
            await self._jobs_queued.wait()
            self._jobs_queued.clear()
            while self._jobs:
                jobs, self._jobs = self._jobs[:MAX_BATCH], self._jobs[MAX_BATCH:]
                try:
                    async with self.lock:
                        try:
                            await self._write_batch(jobs)
                        finally:
                            self.state.put_back()
                except Exception as exc:  # the bus failed, say: these requesters get the error, the next batch is tried
                    for _, future in jobs:
                        future.done() or future.set_exception(exc)
                finally:
                    for _, future in jobs:
                        future.done() or future.set_exception(BoardError("this service stopped leading; ask again"))

    async def _write_batch(self, jobs: list[tuple[Choose, asyncio.Future[tuple[Decision | None, int | None]]]]) -> None:
        batch, chosen = _Batch(), []
        for choose, future in jobs:
            if future.done():
                continue  # its requester is gone
            try:
                decision = choose(batch)
            except BoardError as exc:
                future.set_exception(exc)
                continue
            if decision is None:
                future.set_result((None, None))
            else:
                chosen.append((decision, future))
        seqs = await self._publish_batch([decision for decision, _ in chosen])
        for (decision, future), seq in zip(chosen, seqs):
            future.done() or future.set_result((decision, seq))

    async def _decide_loop(self) -> None:
        while self.leader:
            await self._kick.wait()
            self._kick.clear()
            while self.leader and self.state.pending:
                async with self.lock:
                    key = next(iter(self.state.pending))
                    decision = self.state.decide(*key)
                    if decision is None:
                        self.state.pending.pop(key, None)
                    else:
                        await self._publish(decision)

    async def _expiry_loop(self) -> None:
        while self.leader:
            await asyncio.sleep(EXPIRY_CHECK_SECONDS)
            now = time.time()
            if now < self.grace_until:
                continue
            for claim in self.state.expired(now):
                async with self.lock:
                    if claim.id in self.state.claims and self.state.claims[claim.id].expires_at <= now:
                        log.info("%s: claim %s of %s expired", self.instance, claim.id, claim.agent)
                        self._gone[claim.agent] = now
                        await self._publish(ClaimExpired(by=self.instance, claim=claim.id))

    # --- requests that decide (leader only) ------------------------------------------------------------

    def _decision_handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        return {"claim": self._claim, "renew": self._renew, "release": self._release, "verdict": self._verdict}

    async def _claim(self, body: dict[str, Any]) -> dict[str, Any] | None:
        agent = _text(body, "agent")
        kinds, arenas = _texts(body, "kinds"), _texts(body, "arenas")
        asked = time.time()
        deadline = time.monotonic() + min(float(body.get("wait", 0) or 0), MAX_WAIT)
        while True:
            if self._gone.get(agent, 0.0) > asked:
                return None  # asked before it left or its claim expired: nobody is waiting for the answer
            generation = self._work_generation
            grant, seq = await self._decide(lambda batch: self._choose_grant(batch, agent, kinds, arenas))
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

    def _choose_grant(self, batch: _Batch, agent: str, kinds: list[str], arenas: list[str]) -> ClaimGranted | None:
        if not self.leader:
            raise BoardError("this service stopped leading; ask again")
        if len(self.state.held.get(agent, ())) + batch.grants.get(agent, 0) >= self.settings.max_claims_per_agent:
            raise BoardError(f"{agent} already holds {self.settings.max_claims_per_agent} claims")
        allowed = kinds if self.state.device_work_left(self.settings.max_runs, batch.device_grants) else [
            kind for kind in kinds if kind not in DEVICE_WORK]  # the run budget is spent  # fmt: skip
        work = self.state.next_work(allowed, arenas, taken=batch.works)
        if work is None:
            return None
        batch.works.add(work.id)
        batch.grants[agent] = batch.grants.get(agent, 0) + 1
        batch.device_grants += work.kind in DEVICE_WORK
        return ClaimGranted(by=self.instance, claim=new_id("c"), work=work.id, agent=agent,
                            expires_at=time.time() + self.settings.lease_seconds)  # fmt: skip

    def _held(self, batch: _Batch, agent: str, claim_id: str) -> bool:
        """Whether `agent` holds the claim and no decision earlier in the batch releases it."""
        claim = self.state.claims.get(claim_id)
        return claim is not None and claim.agent == agent and claim_id not in batch.released

    async def _renew(self, body: dict[str, Any]) -> dict[str, bool]:
        agent = _text(body, "agent")
        claims = list(dict.fromkeys(_texts(body, "claims")))

        def choose(batch: _Batch, claim_id: str) -> ClaimRenewed | None:
            if not self._held(batch, agent, claim_id):
                return None
            return ClaimRenewed(by=self.instance, claim=claim_id, expires_at=time.time() + self.settings.lease_seconds)

        async def renew(claim_id: str) -> bool:
            return await self._decide_stored(lambda batch: choose(batch, claim_id)) is not None and claim_id in self.state.claims

        return dict(zip(claims, await asyncio.gather(*(renew(claim_id) for claim_id in claims))))

    async def _release(self, body: dict[str, Any]) -> bool:
        agent, claim_id = _text(body, "agent"), _text(body, "claim")
        if body.get("leaving"):
            self._gone[agent] = time.time()  # its pending claim requests must not take the work back
        done, reason = bool(body.get("done")), str(body.get("reason", ""))[:2000]

        def choose(batch: _Batch) -> ClaimReleased | None:
            if not self._held(batch, agent, claim_id):
                return None
            batch.released.add(claim_id)
            return ClaimReleased(by=self.instance, claim=claim_id, done=done, reason=reason)

        return await self._decide_stored(choose) is not None

    async def _verdict(self, body: dict[str, Any]) -> dict[str, Any]:
        """The decision on a proposed hypothesis or a submitted patch, waiting for it if need be."""
        item = _text(body, "id")
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
            done = [p for p in state.patches.values() if p.hypothesis == hyp.id and p.status == "accepted"]
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
        return out

    # --- reads (every instance) ------------------------------------------------------------------------

    def _read_handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        return {"best": self._best, "query": self._query, "history": self._history, "show": self._show,
                "lineage": self._lineage, "stats": self._stats, "trials": self._trials, "codes": self._codes}  # fmt: skip

    async def _trials(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return self.state.trials(_text(body, "arena"))

    async def _codes(self, body: dict[str, Any]) -> dict[str, str]:
        wanted = _texts(body, "patches")[:100]  # a hundred train.py fit well within one reply
        return {p: self.state.patches[p].code for p in wanted if p in self.state.patches}

    async def _best(self, body: dict[str, Any]) -> dict[str, Any] | None:
        arena = self.state.arenas.get(_text(body, "arena"))
        if arena is None or arena.best is None:
            return None
        patch = self.state.patches[arena.best]
        values = patch.ok_values()
        return {"arena": arena.id, "patch": patch.id, "code": patch.code, "values": values,
                "mean": sum(values) / len(values) if values else None, "spread": self.state.spread(arena.id)}  # fmt: skip

    async def _read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        await self.flush()
        return await _in_thread(self._with_cursor, fn, *args, **kwargs)

    def _with_cursor(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        cursor = self.projection.cursor()
        try:
            return fn(cursor, *args, **kwargs)
        finally:
            cursor.close()

    async def _query(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._read(queries.run_query, _text(body, "sql"), limit=int(body.get("limit", 10_000)))

    async def _history(self, body: dict[str, Any]) -> dict[str, Any]:
        filters = {k: body[k] for k in ("status", "role", "agent", "arena", "since", "until", "limit") if body.get(k) is not None}
        return await self._read(queries.history, **filters)

    async def _show(self, body: dict[str, Any]) -> Any:
        return await self._read(queries.show, _text(body, "id"))

    async def _lineage(self, body: dict[str, Any]) -> Any:
        return await self._read(queries.lineage, _text(body, "id"))

    async def _stats(self, body: dict[str, Any]) -> dict[str, Any]:
        stats = await self._read(_overview)
        state = self.state
        stats["service"] = {"instance": self.instance, "leader": self.leader, "applied_seq": state.applied_seq,
                            "queues": state.queue_depths(), "claims": len(state.claims),
                            "claimed": _count(self.state.work[c.work].kind for c in state.claims.values()),
                            "runs_started": state.runs_started, "runs_finished": state.runs_finished,
                            "runs_in_flight": len(state.running),
                            "run_budget_left": state.device_work_left(self.settings.max_runs)}  # fmt: skip
        stats["arenas"] = [{"arena": a.id, "best": a.best, "queued": state.queue_depths(a.id)} for a in state.arenas.values()]
        return stats


async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn` in a thread; if we are cancelled meanwhile, the thread still finishes first (a thread
    cannot be stopped, and the projection must not be closed under it)."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


def _overview(cursor: Any) -> dict[str, Any]:
    """The projection's side of `stats`: counts, each arena's best with its lineage, usage, agents."""
    stats = queries.stats(cursor)
    per_arena = stats.pop("runs")
    stats["runs"] = {key: sum(row[key] for row in per_arena) for key in ("total", "ok", "failed", "running")}
    stats["runs_per_arena"] = per_arena
    stats["bests"] = queries.best_per_arena(cursor)
    for best in stats["bests"]:
        chain = (queries.lineage(cursor, best["patch"]) or {}).get("patches", [])
        best["lineage"] = [row.get("title") or "baseline" for row in reversed(chain)]
    usage = cursor.execute("SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
                           "coalesce(sum(cost_usd), 0) FROM usage").fetchone()  # fmt: skip
    stats["usage"] = dict(zip(("calls", "input_tokens", "output_tokens", "cost_usd"), usage))
    agents = cursor.execute("SELECT agent, role, node FROM agents WHERE status = 'active' ORDER BY agent").fetchall()
    stats["agents"] = [dict(zip(("agent", "role", "node"), row)) for row in agents]
    return stats


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BoardError(f"the request needs a non-empty string {key!r}")
    return value


def _texts(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BoardError(f"the request needs {key!r}: a non-empty list of strings")
    return value


async def serve(url: str, db: Path, settings: Settings, instance: str) -> None:
    """A service process: connect, open (or create) its projection, serve until cancelled."""
    bus = await Bus.connect(url, name=f"blackboard {instance}", credentials=Credentials.from_settings(settings.nats), wait=30)
    projection = Projection(db)
    try:
        await Service(bus, projection, settings.board, instance).run()
    finally:
        await bus.close()
        projection.close()
