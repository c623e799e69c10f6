"""The blackboard service: the single writer of decisions, and the reader of the board for others.

Every instance tails the stream into its decision state (memory) and its DuckDB projection (file),
and answers read requests (`blackboard.reads`). One instance at a time is the leader: it holds the
leader lease, answers the requests that decide (`blackboard.requests`: claim, renew, release,
verdict), decides what the stream's facts call for and stores every decision through its writer
(`blackboard.writer`), and expires claims whose heartbeats stopped. This module follows the
stream, holds the lease and wires those parts together.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from blackboard.events import DecodeError, Event, LeaderElected, Message, decode
from blackboard.projection import Projection
from blackboard.reads import Reads, in_thread
from blackboard.requests import Requests
from blackboard.state import State
from blackboard.writer import Writer
from swarm.ground.bus import Bus, Credentials, LeaderLease
from swarm.ground.collector import freeze_survivors
from swarm.ground.constants import LEADER_TTL_SECONDS, REQUEST_SECONDS
from swarm.ground.errors import BoardError, BusError
from swarm.ground.settings import BoardSettings, Settings

log = logging.getLogger(__name__)

# The projection's lag behind the decision state, at most about this; reads flush first, so none sees
# it. Each flush is one DuckDB transaction with a fixed cost: every 0.25 s rather than every 0.05 s,
# the service spent about a quarter less CPU a claim at one client (scripts/bench_blackboard.py).
FLUSH_SECONDS = 0.25


class Service:
    def __init__(self, bus: Bus, projection: Projection, settings: BoardSettings, instance: str,
                 stopping: asyncio.Event | None = None) -> None:  # fmt: skip
        self.bus, self.projection, self.settings, self.instance = bus, projection, settings, instance
        self.state = State(settings)
        self.seen_seq = 0  # last stream sequence received (decoded or parked)
        self.buffer: list[tuple[int, Event | Message]] = []  # received, not yet in the projection
        self.flushing = asyncio.Lock()
        self._seq_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()
        self._lease: LeaderLease | None = None
        self.writer = Writer(bus, self.state, instance, self._wait_applied)
        self.requests = Requests(self.writer, self.state, settings, instance)
        self.reads = Reads(self.state, projection, settings, instance, self.flush, lambda: self.leader)
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._leader_stops: list[Callable[[], Awaitable[None]]] = []
        self._failure: BaseException | None = None  # why a leader task stopped: decide no more, step down
        self._wake = asyncio.Event()  # the lease loop looks now rather than at its next second
        self.ready = asyncio.Event()  # set once caught up with the stream as it was at start
        self.stopping = stopping or asyncio.Event()  # set by a signal: the lease loop ends even if its cancellation was swallowed

    @property
    def leader(self) -> bool:
        """Whether this instance leads: holds the lease and writes decisions."""
        return self.writer.leading

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled."""
        await self.bus.ensure_stream()
        target = await self.bus.last_seq()
        reads = [await self.bus.serve(verb, handler) for verb, handler in self.reads.handlers().items()]
        tasks = [asyncio.create_task(self._tail(), name="tail"), asyncio.create_task(self._flush_loop(), name="flush")]
        try:
            await self._until_failed(tasks, self._wait_applied(target))
            await self.flush()
            self.ready.set()
            log.info("%s: caught up at sequence %d", self.instance, target)
            await self._until_failed(tasks, self._lease_loop())
        finally:
            if self.leader and self._lease is not None:
                await self._orphans_back()
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

    async def _orphans_back(self) -> None:
        """A stopping leader first hands back the claims of agents that left just before it (a swarm
        stops its agents, then its service), so that no stopped swarm's board shows work held."""
        try:
            async with asyncio.timeout(5):
                await self._wait_applied(await self.bus.last_seq())
                await self.requests.end_orphans()
                await self._wait_applied(await self.bus.last_seq())  # in the projection it leaves behind
        except (TimeoutError, BusError, BoardError) as exc:
            log.warning("%s: stopping with claims of departed agents still held (they expire): %r", self.instance, exc)

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
                event = item = self.writer.sent(message.data, message.subject) or decode(message.data, message.subject)
            except DecodeError as exc:
                log.warning("%s: event %d parked: %s", self.instance, seq, exc)
            else:
                self.state.apply(event, seq)
                self.requests.saw(event)
                self.writer.saw(event, seq)
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
                await in_thread(self.projection.apply_many, batch)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    # --- leadership --------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        lease = self._lease = await self.bus.leader_lease()
        last_refresh = hold_off = 0.0
        while not self.stopping.is_set():
            if self._failure is not None and self.leader:
                await self._give_up(lease, self._failure)
                hold_off = time.monotonic() + LEADER_TTL_SECONDS  # a standby's turn first
            self._failure = None
            try:
                if not self.leader:
                    if time.monotonic() >= hold_off and await lease.acquire(self.instance):
                        last_refresh = time.monotonic()
                        await self._become_leader()
                elif await lease.refresh(self.instance):
                    last_refresh = time.monotonic()
                    await self._stream_layout()
                else:
                    await self._step_down("the leader lease was taken over")
            except BusError as exc:  # the bus is down or reconnecting: try again in a second
                log.warning("%s: leader lease: %s", self.instance, exc)
            if self.leader and time.monotonic() - last_refresh > LEADER_TTL_SECONDS - 2:
                await self._step_down("could not refresh the leader lease in time")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def _stream_layout(self) -> None:
        """How the writer stores a batch: in one round trip on a stream of one server (a replicated one
        checks some headers before its replicas agree), as an atomic batch where the stream takes them."""
        replicas, atomic = await self.bus.stream_layout()
        self.writer.chained, self.writer.atomic = replicas == 1, replicas == 1 and atomic

    async def _give_up(self, lease: LeaderLease, failure: BaseException) -> None:
        """A leader task failed, so this instance no longer decides or expires claims: say why, step
        down and give the lease up, so a standby leads instead of a leader that only renews its lease."""
        log.error("%s: the leader cannot decide: %s: %s", self.instance, type(failure).__name__, failure,
                  exc_info=failure)  # fmt: skip
        await self._step_down(f"a leader task failed ({type(failure).__name__}: {failure})")
        try:
            await lease.release()
        except BusError as exc:
            log.warning("%s: could not release the leader lease (it lapses in %d s): %s", self.instance,
                        LEADER_TTL_SECONDS, exc)  # fmt: skip

    def _leader_task_done(self, task: asyncio.Task[None]) -> None:
        """A leader task that ends while this instance leads has stopped deciding: the lease loop steps down."""
        if task.cancelled() or not self.leader:
            return
        exc = task.exception()
        self._failure = exc if exc is not None else BoardError(f"the leader's {task.get_name()} loop ended")
        self._wake.set()

    async def _become_leader(self) -> None:
        writer = self.writer
        await self._stream_layout()
        await self._wait_applied(await self.bus.last_seq())
        # Every holder gets a lease on the new leader; one whose renewal or release was lost with the
        # old leader asks again only after its request's timeout, so that comes on top.
        self.requests.grace_until = time.time() + self.settings.lease_seconds + REQUEST_SECONDS
        async with writer.lock:
            writer.leading = True
            if await writer.publish(LeaderElected(by=self.instance, instance=self.instance)) is None:
                writer.leading = False
                return
        log.warning("%s: leading the blackboard", self.instance)
        for verb, handler in self.requests.handlers().items():
            self._leader_stops.append(await self.bus.serve(verb, handler))
        self._leader_tasks = [asyncio.create_task(writer.decide_loop(), name="decide"),
                              asyncio.create_task(self.requests.expiry_loop(), name="expiry"),
                              asyncio.create_task(writer.write_loop(), name="write")]  # fmt: skip
        for task in self._leader_tasks:
            task.add_done_callback(self._leader_task_done)
        writer.kick.set()

    async def _step_down(self, why: str) -> None:
        if not self.leader:
            return
        self.writer.leading = False
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
        self.writer.fail_jobs()


async def serve(url: str, db: Path, settings: Settings, instance: str, stopping: asyncio.Event | None = None) -> None:
    """A service process: connect, open (or create) its projection, serve until cancelled or `stopping`
    is set (`aio.run`'s flag: Python 3.11's `wait_for` can swallow the cancellation a signal brings)."""
    freeze_survivors()  # full collections scan only what is new: their pauses were the claims' p99
    bus = await Bus.connect(url, name=f"blackboard {instance}", credentials=Credentials.from_settings(settings.nats), wait=30)
    projection = Projection(db)
    try:
        await Service(bus, projection, settings.board, instance, stopping).run()
    finally:
        await bus.close()
        projection.close()
