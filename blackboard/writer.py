"""The leader's writer: decisions chosen in batches, published with the expected-sequence guard.

Each decision is published with the expected-sequence guard and applied back from the stream
before the next one is made, so a second leader (a partitioned old one, say) can never write over
a decision it has not seen.

Requests that decide are batched: while one batch is being stored, the next queues up, and the
writer decides it whole under the lock, each decision taking nothing that an earlier one in the
batch took (work, a claim's release). A request that finds nothing queued or being stored is a
batch of one, decided and stored in its own task. On a stream of one server the batch is stored in
one round trip: a large one as a JetStream atomic batch (`Bus.publish_atomic`: all or none, back to
back, the first decision's expected-sequence guard checked at the commit, one acknowledgement for
the whole batch rather than one per decision), a small one, or any where the stream does not take
atomic batches (a server before 2.12), as a chain (`Bus.publish_chain`): the first decision carries
the guard, each later one the id of the one before it as the stream's expected last message, so
nothing, and no other writer's decision, is stored between two links.

Besides the requests, the writer's decide loop makes the decisions the stream's facts call for:
each pending item of the state, in order, through `blackboard.decisions.decide`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from blackboard.decisions import decide
from blackboard.events import Decision, Event, envelope
from blackboard.state import State
from swarm.ground.bus import Bus, Envelope, SequenceConflict
from swarm.ground.errors import BoardError

log = logging.getLogger(__name__)

MAX_BATCH = 64  # decisions stored in one round trip; more wait for the next one
# An atomic batch costs about one fixed round of the server's (28-45 ms on this loaded 2-core machine,
# scripts/bench_blackboard.py's era), a chain about 1.5-4 ms a link: chains are quicker below about 12.
ATOMIC_MIN_BATCH = 12
_REMEMBERED = 10_000  # recent decisions' ids kept to recognise our own write after a lost acknowledgement


@dataclass
class Batch:
    """What the decisions chosen so far in one batch take, so that later ones in it do not take it too."""

    works: set[str] = field(default_factory=set)  # granted
    grants: dict[str, int] = field(default_factory=dict)  # agent -> claims granted to it
    device_grants: int = 0
    released: set[str] = field(default_factory=set)  # claims


Choose = Callable[[Batch], Decision | None]  # a request's decision given its batch so far, or None: none needed
Job = tuple[Choose, asyncio.Future[tuple[Decision | None, int | None]]]


def not_leading() -> BoardError:
    return BoardError("this service stopped leading; ask again")


class Writer:
    """The single writer of decisions while its service leads (`leading`); one decision at a time under `lock`."""

    def __init__(self, bus: Bus, state: State, instance: str, wait_applied: Callable[[int], Awaitable[None]]) -> None:
        self.bus, self.state, self.instance = bus, state, instance
        self._wait_applied = wait_applied  # until the service's tail has applied a stream sequence
        self.leading = False
        self.lock = asyncio.Lock()  # one decision at a time: choose, publish, see it applied
        self.chained = False  # store a batch in one round trip (the stream has one replica)
        self.atomic = False  # ... as one atomic batch (the stream takes them), else as a chain
        self.kick = asyncio.Event()  # the state may have pending items: the decide loop looks
        self._jobs: list[Job] = []
        self._jobs_queued = asyncio.Event()
        self._decided: dict[str, int] = {}  # recent decisions' event ids -> stream sequence
        self._sent: dict[bytes, Decision] = {}  # the bytes of decisions published, not yet seen back

    def saw(self, event: Event, seq: int) -> None:
        """The tail applied `event` at `seq`: remember our decisions' sequences, wake the decide loop."""
        if isinstance(event, Decision):
            self._decided[event.id] = seq
            if len(self._decided) > _REMEMBERED:
                del self._decided[next(iter(self._decided))]
        if self.leading and self.state.pending:
            self.kick.set()

    def sent(self, data: bytes, subject: str) -> Decision | None:
        """The decision this writer published as `data` on `subject`, once, when the tail sees it back:
        the same bytes decode to the same event, so the tail need not decode them again."""
        decision = self._sent.pop(data, None)
        return decision if decision is not None and decision.subject == subject else None

    def _envelope(self, decision: Decision) -> Envelope:
        """`decision` as stored, its bytes remembered for the tail (`sent`)."""
        stored = envelope(decision)
        self._sent[stored.data] = decision
        if len(self._sent) > _REMEMBERED:  # never seen back (not stored): forget the oldest
            del self._sent[next(iter(self._sent))]
        return stored

    def fail_jobs(self) -> None:
        """On stepping down: the requests still queued get an error saying to ask again."""
        jobs, self._jobs = self._jobs, []
        for _, future in jobs:
            future.done() or future.set_exception(not_leading())

    # --- publishing ---------------------------------------------------------------------------

    async def publish(self, decision: Decision) -> int | None:
        """Publish one decision (the lock held) and wait until the state has applied it.

        None if another writer decided first: the state has then caught up, decide afresh."""
        if decision.by != self.instance:  # the state's decisions are signed by whoever publishes them
            decision = decision.model_copy(update={"by": self.instance})
        try:
            seq = await self.bus.publish(self._envelope(decision), expect_decision_seq=self.state.decision_seq)
        except SequenceConflict as exc:
            await self._wait_applied(await self.bus.last_seq())
            if (seq := self._decided.get(decision.id)) is not None:
                return seq  # our own write, stored by an attempt whose acknowledgement was lost
            log.warning("%s: %s; caught up, deciding again", self.instance, exc)
            return None
        await self._wait_applied(seq)
        return seq

    async def publish_batch(self, decisions: list[Decision]) -> list[int | None]:
        """Publish decisions chosen together (the lock held) and wait until the state has applied them;
        each one's sequence, or None where it was not stored: decide that one afresh."""
        if len(decisions) < 2 or not self.chained:
            return [await self.publish(decision) for decision in decisions]
        envelopes = [self._envelope(decision) for decision in decisions]
        if self.atomic and len(decisions) >= ATOMIC_MIN_BATCH:
            try:
                seqs = await self.bus.publish_atomic(envelopes, expect_decision_seq=self.state.decision_seq)
            except SequenceConflict as exc:
                log.warning("%s: %s; caught up, deciding again", self.instance, exc)
                seqs = [None] * len(decisions)
        else:
            seqs = await self.bus.publish_chain(envelopes, expect_decision_seq=self.state.decision_seq)
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

    # --- requests that decide -------------------------------------------------------------------

    async def decide(self, choose: Choose) -> tuple[Decision | None, int | None]:
        """Have the writer `choose` this request's decision in its next batch and store it.

        (None, None) when `choose` found no decision to make; (decision, None) when it was not
        stored (another writer decided first, or a fact came between): choose again."""
        if not self.leading:
            raise not_leading()
        future: asyncio.Future[tuple[Decision | None, int | None]] = asyncio.get_running_loop().create_future()
        if not self._jobs and not self.lock.locked():
            # Nothing queued ahead of it and no batch being stored: a batch of one, which its own task
            # writes, sparing the hand-over to the write loop and back (two task switches in a cycle of
            # about a millisecond at one client). The lock is free, so taking it does not yield.
            await self._write([(choose, future)])
            return future.result()
        self._jobs.append((choose, future))
        self._jobs_queued.set()
        return await future

    async def decide_stored(self, choose: Choose) -> Decision | None:
        """`decide` until the decision is stored (or none is needed: None)."""
        while True:  # not stored (a fact came between, say): decide again
            decision, seq = await self.decide(choose)
            if decision is None or seq is not None:
                return decision

    async def write_loop(self) -> None:
        """Decide and store the queued requests a batch at a time: while one is stored, the next queues."""
        while self.leading:
            await self._jobs_queued.wait()
            self._jobs_queued.clear()
            while self._jobs:
                jobs, self._jobs = self._jobs[:MAX_BATCH], self._jobs[MAX_BATCH:]
                try:
                    await self._write(jobs)
                except Exception as exc:  # the bus failed, say: these requesters get the error, the next batch is tried
                    for _, future in jobs:
                        future.done() or future.set_exception(exc)
                finally:
                    for _, future in jobs:
                        future.done() or future.set_exception(not_leading())

    async def _write(self, jobs: list[Job]) -> None:
        """Decide and store `jobs` as one batch under the lock; each job's future gets its answer."""
        async with self.lock:
            try:
                await self._write_batch(jobs)
            finally:
                self.state.put_back()

    async def _write_batch(self, jobs: list[Job]) -> None:
        batch, chosen = Batch(), []
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
        seqs = await self.publish_batch([decision for decision, _ in chosen])
        for (decision, future), seq in zip(chosen, seqs):
            future.done() or future.set_result((decision, seq))

    # --- what the facts call for ------------------------------------------------------------------

    async def decide_loop(self) -> None:
        while self.leading:
            await self.kick.wait()
            self.kick.clear()
            while self.leading and self.state.pending:
                async with self.lock:
                    key = next(iter(self.state.pending))
                    decision = decide(self.state, *key)
                    if decision is None:
                        self.state.pending.pop(key, None)
                    else:
                        await self.publish(decision)
