"""Services that crash: nothing published is lost, no decision is doubled, a standby takes over."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest

from blackboard.client import Board
from blackboard.events import (
    ClaimExpired, ClaimGranted, ClaimReleased, Decision, Event, HypothesisApproved, HypothesisProposed, HypothesisRejected,
    LeaderElected, WorkCancelled, WorkQueued, decode,
)  # fmt: skip
from blackboard.projection import Projection
from blackboard.service import Service
from swarm.ground.bus import Bus
from swarm.natsserver import NatsServer
from swarm.ground.settings import BoardSettings
from tests.service.conftest import ARENA, ServiceProcess, hypothesis, open_arena, running_service, wait_leading


async def stream(bus: Bus) -> list[tuple[int, Event]]:
    return [(seq, decode(message.data)) for seq, message in await bus.stored()]


async def settle(bus: Bus, quiet: float = 1.5, timeout: float = 60) -> None:
    """Wait until nothing new has been written for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = await bus.last_seq(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "the stream never settled"
        await asyncio.sleep(0.2)
        if (now := await bus.last_seq()) != last:
            last, since = now, time.monotonic()


def check_no_decision_doubled(events: list[tuple[int, Event]]) -> None:
    verdicts: dict[str, int] = defaultdict(int)
    holder: dict[str, str | None] = {}
    claim_work: dict[str, str] = {}
    for _, event in events:
        if isinstance(event, (HypothesisApproved, HypothesisRejected)):
            verdicts[event.hypothesis] += 1
        elif isinstance(event, ClaimGranted):
            assert holder.get(event.work) is None, f"{event.work} granted while {holder[event.work]} held it"
            holder[event.work], claim_work[event.claim] = event.claim, event.work
        elif isinstance(event, (ClaimReleased, ClaimExpired)) and event.claim in claim_work:
            holder[claim_work[event.claim]] = None
    assert all(count == 1 for count in verdicts.values()), "a hypothesis was decided twice"


async def test_a_killed_service_restarts_to_a_projection_equal_to_a_rebuild(
    nats_server: NatsServer, bus: Bus, tmp_path: Path, service_processes: list[ServiceProcess]
) -> None:
    db = tmp_path / "board.duckdb"
    service_processes.append(ServiceProcess(nats_server.url, db, "s1", 3.0, tmp_path / "s1.log"))
    board = Board(bus, agent="flood", retry_seconds=30)
    await open_arena(board)
    ideas = [hypothesis(f"flood idea {i}", LR=i + 1) for i in range(600)]

    async def flood(part: list[HypothesisProposed]) -> None:
        for start in range(0, len(part), 50):
            await asyncio.gather(*(board.publish(e) for e in part[start : start + 50]))
            await asyncio.sleep(0.05)

    flooding = asyncio.create_task(flood(ideas[:300]))
    async with asyncio.timeout(60):  # killed once it is deciding the flood: a crash between decisions
        while not any(isinstance(e, (HypothesisApproved, HypothesisRejected)) for _, e in await stream(bus)):
            await asyncio.sleep(0.05)
    service_processes[0].kill()
    await flooding
    await flood(ideas[300:])  # facts keep coming while no service decides
    service_processes.append(ServiceProcess(nats_server.url, db, "s1", 3.0, tmp_path / "s1b.log"))
    async with asyncio.timeout(90):
        while True:
            decided = {e.hypothesis for _, e in await stream(bus) if isinstance(e, (HypothesisApproved, HypothesisRejected))}
            if decided >= {i.hypothesis for i in ideas}:
                break
            await asyncio.sleep(0.5)
    await settle(bus)
    assert service_processes[1].stop() == 0
    events = await stream(bus)
    check_no_decision_doubled(events)
    restarted = Projection(db)
    rebuilt = Projection(tmp_path / "rebuilt.duckdb")
    rebuilt.rebuild((seq, event) for seq, event in events)
    try:
        assert restarted.last_seq == events[-1][0]
        assert restarted.differences(rebuilt) == []
        seqs = [row[0] for row in restarted.cursor().execute("SELECT seq FROM events ORDER BY seq").fetchall()]
        assert seqs == list(range(1, events[-1][0] + 1)), "a published event is missing from the projection"
    finally:
        restarted.close()
        rebuilt.close()


async def test_two_services_one_writes_and_the_standby_takes_over(
    nats_server: NatsServer, bus: Bus, tmp_path: Path, service_processes: list[ServiceProcess]
) -> None:
    for name in ("s1", "s2"):
        service_processes.append(ServiceProcess(nats_server.url, tmp_path / f"{name}.duckdb", name, 4.0, tmp_path / f"{name}.log"))
    board = Board(bus, agent="driver", retry_seconds=40)
    await open_arena(board)
    async with asyncio.timeout(30):
        while not [e for _, e in await stream(bus) if isinstance(e, LeaderElected)]:
            await asyncio.sleep(0.2)
    [first] = [e for _, e in await stream(bus) if isinstance(e, LeaderElected)]
    leader = next(p for p in service_processes if p.log.name == f"{first.instance}.log")
    granted: list[tuple[float, str]] = []
    stop = asyncio.Event()

    async def worker(name: str) -> None:
        agent = Board(bus, agent=name, retry_seconds=40)
        while not stop.is_set():
            await agent.publish(hypothesis(f"{name} idea {len(granted)} {time.monotonic()}", LR=time.monotonic()))
            claim = await agent.claim(["implement"], [ARENA], wait=2)
            if claim is not None:
                granted.append((time.monotonic(), claim.work))
                await agent.release(claim.claim, done=True)

    workers = [asyncio.create_task(worker(f"w{i}")) for i in range(4)]
    await asyncio.sleep(3)
    leader.kill()
    killed = time.monotonic()
    async with asyncio.timeout(40):
        while not any(t > killed + 0.5 for t, _ in granted):
            await asyncio.sleep(0.1)
    takeover = min(t for t, _ in granted if t > killed + 0.5) - killed
    await asyncio.sleep(2)
    stop.set()
    await asyncio.gather(*workers)
    await settle(bus)
    events = await stream(bus)
    assert takeover < 15, f"the standby took {takeover:.1f} s to take over"
    elections = [e.instance for _, e in events if isinstance(e, LeaderElected)]
    assert elections == [first.instance, next(n for n in ("s1", "s2") if n != first.instance)]
    writers = [e.by for _, e in events if isinstance(e, Decision)]
    switch = writers.index(elections[1])
    assert set(writers[:switch]) == {elections[0]} and set(writers[switch:]) == {elections[1]}, "two writers interleaved"
    check_no_decision_doubled(events)
    works = [w for _, w in granted]
    assert len(works) == len(set(works)), "a piece of work was handed out twice"
    queued = {e.work for _, e in events if isinstance(e, WorkQueued) and e.work_kind == "implement"}
    assert set(works) <= queued
    approved = {e.hypothesis for _, e in events if isinstance(e, HypothesisApproved)}
    proposed = {e.hypothesis for _, e in events if e.kind == "hypothesis_proposed"}
    assert approved == proposed, "a hypothesis was left undecided across the handover"
    assert not [e for _, e in events if isinstance(e, WorkCancelled)]


async def test_a_leader_whose_decide_loop_fails_says_why_and_the_standby_takes_over(
    bus: Bus, tmp_path: Path, settings: BoardSettings, caplog: pytest.LogCaptureFixture
) -> None:
    board = Board(bus, agent="driver", retry_seconds=40)
    async with running_service(bus, tmp_path / "s1.duckdb", settings, "s1") as first:
        await wait_leading(first)
        async with running_service(bus, tmp_path / "s2.duckdb", settings, "s2") as second:
            first.state.pending[("no such kind", "x")] = None  # its decide loop raises on this item
            first.writer.kick.set()
            await wait_leading(second, timeout=30)
            assert not first.leader
            assert any(r.levelname == "ERROR" and "s1: the leader cannot decide" in r.getMessage()
                       and "unknown pending item kind" in r.getMessage() for r in caplog.records)  # fmt: skip
            await open_arena(board)
            verdict = await board.propose(hypothesis("decided by the new leader", LR=0.5))
            assert verdict.status == "approved"


async def test_a_leader_told_to_stop_steps_down_and_gives_its_lease_up_even_if_nothing_cancels_it(
    bus: Bus, tmp_path: Path, settings: BoardSettings,
) -> None:  # fmt: skip
    """`stopping` is the flag a signal sets: Python 3.11's `wait_for` can swallow the cancellation
    the same signal brings, and a service that did so would lead on after its Ctrl-C."""
    projection = Projection(tmp_path / "board.duckdb")
    service = Service(bus, projection, settings, "s1")
    task = asyncio.create_task(service.run())
    try:
        await wait_leading(service, timeout=60)
        service.stopping.set()  # and no cancel
        await asyncio.wait_for(task, timeout=120)
        assert not service.leader
        assert not await (await bus.leader_lease()).holder()  # the standby need not wait out the TTL
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        projection.close()
