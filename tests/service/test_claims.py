"""Claims against a real service: granted exactly once, expired when the holder dies, fair."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from blackboard.client import Board
from blackboard.service import Service
from swarm.natsserver import NatsServer
from tests.service.conftest import ARENA, hypothesis, open_arena

CLAIMER = Path(__file__).with_name("claimer.py")


async def queue_implement_work(board: Board, service: Service, count: int) -> set[str]:
    await open_arena(board)
    events = [hypothesis(f"idea number {i}", LR=0.001 * (i + 1)) for i in range(count)]
    await asyncio.gather(*(board.publish(e) for e in events))
    async with asyncio.timeout(120):
        while sum(1 for w in service.state.work.values() if w.kind == "implement") < count:
            await asyncio.sleep(0.1)
    return {w.id for w in service.state.work.values() if w.kind == "implement"}


def spawn_claimer(url: str, agent: str, hold: bool = False) -> subprocess.Popen[str]:
    args = [sys.executable, str(CLAIMER), url, agent, ARENA, "hold" if hold else "release"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])


async def test_eight_processes_racing_for_a_thousand_pieces_get_each_exactly_once(
    nats_server: NatsServer, board: Board, service: Service
) -> None:
    work = await queue_implement_work(board, service, 1000)
    claimers = [spawn_claimer(nats_server.url, f"agent-{i}") for i in range(8)]
    outputs = await asyncio.gather(*(asyncio.to_thread(p.communicate, timeout=240) for p in claimers))
    assert all(p.returncode == 0 for p in claimers)
    granted = [line for out, _ in outputs for line in out.split()]
    assert len(granted) == len(set(granted)), "a piece of work was granted twice"
    assert set(granted) == work
    assert all(len(out.split()) > 0 for out, _ in outputs), "some claimant never got any work"


async def test_a_killed_holder_loses_its_claim_within_the_lease(
    nats_server: NatsServer, board: Board, service: Service
) -> None:
    work = await queue_implement_work(board, service, 1)
    holder = spawn_claimer(nats_server.url, "doomed", hold=True)
    granted = await asyncio.to_thread(holder.stdout.readline)  # type: ignore[union-attr]
    assert granted.strip() in work
    await asyncio.sleep(2 * service.settings.lease_seconds)
    assert service.state.work[granted.strip()].status == "claimed", "heartbeats must keep the claim alive"
    holder.kill()
    holder.wait()
    killed = time.monotonic()
    claim = await Board(board.bus, agent="survivor").claim(["implement"], [ARENA], wait=15)
    assert claim is not None and claim.work == granted.strip()
    assert time.monotonic() - killed < service.settings.lease_seconds + 2


async def test_claims_are_served_fifo_to_waiting_agents_and_capped_per_agent(board: Board, service: Service) -> None:
    await open_arena(board)
    waiters = [asyncio.create_task(Board(board.bus, agent=f"w{i}").claim(["implement"], [ARENA], wait=20)) for i in range(3)]
    await asyncio.sleep(0.3)
    for i in range(3):
        await board.publish(hypothesis(f"waited idea {i}", LR=0.5 + i))
    claims = await asyncio.gather(*waiters)
    assert all(c is not None for c in claims) and len({c.work for c in claims}) == 3  # type: ignore[union-attr]
    greedy = Board(board.bus, agent="greedy")
    for i in range(service.settings.max_claims_per_agent + 1):
        await board.publish(hypothesis(f"greedy idea {i}", LR=2.0 + i))
    for _ in range(service.settings.max_claims_per_agent):
        assert await greedy.claim(["implement"], [ARENA], wait=10) is not None
    try:
        await greedy.claim(["implement"], [ARENA], wait=1)
        raise AssertionError("an agent got more claims than allowed")
    except Exception as exc:
        assert "already holds" in str(exc)


async def test_claims_decided_in_one_batch_take_distinct_work_and_releases_return_it(board: Board, service: Service) -> None:
    work = await queue_implement_work(board, service, 5)
    agents = [Board(board.bus, agent=f"crowd-{i}") for i in range(20)]
    claims = await asyncio.gather(*(agent.claim(["implement"], [ARENA], wait=1) for agent in agents))
    granted = [(agent, c) for agent, c in zip(agents, claims) if c is not None]
    assert sorted(c.work for _, c in granted) == sorted(work), "each piece once, and none left behind"
    assert all(await asyncio.gather(*(agent.release(c.claim, done=False) for agent, c in granted)))
    assert service.state.queue_depths()["implement"] == 5
    again = await asyncio.gather(*(agent.claim(["implement"], [ARENA], wait=1) for agent in agents))
    assert sorted(c.work for c in again if c is not None) == sorted(work)
