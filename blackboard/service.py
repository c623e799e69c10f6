"""The blackboard service: the single writer of decisions, and the reader of the board for others.

Every instance tails the stream into its decision state (memory) and its DuckDB projection (file),
and answers read requests. One instance at a time is the leader: it holds the leader lease and
answers the requests that decide (claim, renew, release, verdict), decides what the stream's facts
call for, and expires claims whose heartbeats stopped. Each decision is published with the
expected-sequence guard and applied back from the stream before the next one is made, so a second
leader (a partitioned old one, say) can never write over a decision it has not seen.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from blackboard import queries
from blackboard.events import (
    AgentLeft, ClaimExpired, ClaimGranted, ClaimReleased, ClaimRenewed, Decision, DecodeError, HypothesisApproved,
    HypothesisRejected, LeaderElected, PatchAccepted, PatchRefused, WorkQueued, decode, new_id,
)  # fmt: skip
from blackboard.projection import Projection
from blackboard.state import DEVICE_WORK, State, Work
from swarm.bus import Bus, Credentials, LeaderLease, SequenceConflict
from swarm.constants import LEADER_TTL_SECONDS
from swarm.errors import BoardError, BusError
from swarm.settings import BoardSettings, Settings

log = logging.getLogger(__name__)

MAX_WAIT = 30.0  # longest a claim or verdict request is held open
FLUSH_SECONDS = 0.05  # projection lag behind the decision state, at most about this
EXPIRY_CHECK_SECONDS = 0.5
_VERDICTS = (HypothesisApproved, HypothesisRejected, PatchAccepted, PatchRefused)


class Service:
    def __init__(self, bus: Bus, projection: Projection, settings: BoardSettings, instance: str) -> None:
        self.bus, self.projection, self.settings, self.instance = bus, projection, settings, instance
        self.state = State(settings)
        self.leader = False
        self.lock = asyncio.Lock()  # one decision at a time: choose, publish, see it applied
        self.seen_seq = 0  # last stream sequence received (decoded or parked)
        self.buffer: list[tuple[int, bytes]] = []  # received, not yet in the projection
        self.flushing = asyncio.Lock()
        self.grace_until = 0.0  # no claim expires before this (a new leader gives holders one lease)
        self._seq_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()
        self._verdict_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._work_generation = 0  # bumped whenever work may have become claimable
        self._work_waiters: list[asyncio.Future[None]] = []
        self._lease: LeaderLease | None = None
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
            try:
                event = decode(message.data, message.subject)
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
            self.buffer.append((seq, message))
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
                else:
                    await self._step_down("the leader lease was taken over")
            except BusError as exc:  # the bus is down or reconnecting: try again in a second
                log.warning("%s: leader lease: %s", self.instance, exc)
            if self.leader and time.monotonic() - last_refresh > LEADER_TTL_SECONDS - 2:
                await self._step_down("could not refresh the leader lease in time")
            await asyncio.sleep(1.0)

    async def _become_leader(self) -> None:
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
        self._leader_tasks = [asyncio.create_task(self._decide_loop()), asyncio.create_task(self._expiry_loop())]
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

    async def _publish(self, decision: Decision) -> int | None:
        """Publish one decision (the lock held) and wait until the state has applied it.

        None if another writer decided first: the state has then caught up, decide afresh."""
        if decision.by != self.instance:  # the state's decisions are signed by whoever publishes them
            decision = decision.model_copy(update={"by": self.instance})
        try:
            seq = await self.bus.publish(decision, expect_decision_seq=self.state.decision_seq)
        except SequenceConflict as exc:
            await self._wait_applied(await self.bus.last_seq())
            if (seq := self._decided.get(decision.id)) is not None:
                return seq  # our own write, stored by an attempt whose acknowledgement was lost
            log.warning("%s: %s; caught up, deciding again", self.instance, exc)
            return None
        await self._wait_applied(seq)
        return seq

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
            if len(self.state.held.get(agent, ())) >= self.settings.max_claims_per_agent:
                raise BoardError(f"{agent} already holds {self.settings.max_claims_per_agent} claims")
            generation = self._work_generation
            async with self.lock:
                if not self.leader:
                    raise BoardError("this service stopped leading; ask again")
                allowed = kinds if self.state.device_work_left(self.settings.max_runs) else [
                    kind for kind in kinds if kind not in DEVICE_WORK]  # the run budget is spent  # fmt: skip
                work = self.state.next_work(allowed, arenas)
                if work is not None:
                    grant = ClaimGranted(by=self.instance, claim=new_id("c"), work=work.id, agent=agent,
                                         expires_at=time.time() + self.settings.lease_seconds)  # fmt: skip
                    if await self._publish(grant) is not None and grant.claim in self.state.claims:
                        return self._describe(work, grant)
                    continue  # the grant lost a race with a fact closing that work: choose again
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

    async def _renew(self, body: dict[str, Any]) -> dict[str, bool]:
        agent, result = _text(body, "agent"), {}
        for claim_id in _texts(body, "claims"):
            async with self.lock:
                claim = self.state.claims.get(claim_id)
                held = claim is not None and claim.agent == agent
                if held:
                    expires = time.time() + self.settings.lease_seconds
                    held = await self._publish(ClaimRenewed(by=self.instance, claim=claim_id, expires_at=expires)) is not None
                result[claim_id] = held and claim_id in self.state.claims
        return result

    async def _release(self, body: dict[str, Any]) -> bool:
        agent, claim_id = _text(body, "agent"), _text(body, "claim")
        if body.get("leaving"):
            self._gone[agent] = time.time()  # its pending claim requests must not take the work back
        async with self.lock:
            claim = self.state.claims.get(claim_id)
            if claim is None or claim.agent != agent:
                return False
            event = ClaimReleased(by=self.instance, claim=claim_id, done=bool(body.get("done")), reason=str(body.get("reason", ""))[:2000])
            return await self._publish(event) is not None

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
