"""Claims against a real service: a crowd's decided in large batches, stored as atomic batches, each
piece of work granted once and every release returning it; a lone one decided in its own task."""

from __future__ import annotations

import asyncio

from blackboard.client import Board
from blackboard.events import ClaimGranted
from blackboard.service import Service
from blackboard.writer import ATOMIC_MIN_BATCH, Batch
from swarm.ground.constants import STREAM
from tests.service.conftest import ARENA
from tests.service.test_claims import queue_implement_work

CROWD = 4 * ATOMIC_MIN_BATCH


async def test_a_crowd_claiming_at_once_is_granted_distinct_work_stored_in_atomic_batches(board: Board, service: Service) -> None:
    work = await queue_implement_work(board, service, CROWD)
    agents = [Board(board.bus, agent=f"crowd-{i}") for i in range(CROWD)]
    claims = await asyncio.gather(*(agent.claim(["implement"], [ARENA], wait=10) for agent in agents))
    assert None not in claims
    assert sorted(c.work for c in claims if c is not None) == sorted(work), "each piece once, and none left behind"
    grants = [service.state.claims[c.claim] for c in claims if c is not None]
    assert all(grant.agent == agent.agent for grant, agent in zip(grants, agents))
    assert all(await asyncio.gather(*(agent.release(c.claim, done=False) for agent, c in zip(agents, claims) if c)))
    assert service.state.queue_depths(ARENA)["implement"] == CROWD, "released work is counted once in the queue"
    again = await asyncio.gather(*(agent.claim(["implement"], [ARENA], wait=10) for agent in agents))
    assert sorted(c.work for c in again if c is not None) == sorted(work), "a release did not return its work"
    batched = 0  # grants the stream holds as members of an atomic batch
    last = await board.bus.last_seq()
    for seq in range(1, last + 1):
        stored = await board.bus.js.get_msg(STREAM, seq)
        batched += stored.subject.endswith("claim_granted") and "Nats-Batch-Id" in (stored.headers or {})
    assert batched >= ATOMIC_MIN_BATCH, "the crowd's grants were not stored as atomic batches"


async def test_a_lone_request_is_decided_in_its_own_task_and_requests_behind_a_batch_in_the_write_loop(
    board: Board, service: Service
) -> None:
    """One client's claims are not handed to the write loop and back: that hop is a fifth of the cycle."""
    await queue_implement_work(board, service, 4)
    writer, deciders = service.writer, []

    def grant_to(agent: str):  # the service's own choice of a grant, noting which task made it
        def choose(batch: Batch) -> ClaimGranted | None:
            deciders.append(asyncio.current_task())
            return service.requests._choose_grant(batch, agent, ["implement"], [ARENA])
        return choose

    grant, seq = await writer.decide(grant_to("lone"))
    assert isinstance(grant, ClaimGranted) and seq is not None and grant.claim in service.state.claims
    assert deciders == [asyncio.current_task()], "a lone request waited for the write loop"

    async with writer.lock:  # a batch being stored: the requests behind it queue
        crowd = [asyncio.create_task(writer.decide(grant_to(f"crowd-{i}"))) for i in range(3)]
        async with asyncio.timeout(30):
            while len(writer._jobs) < 3:
                await asyncio.sleep(0)
        assert deciders == [asyncio.current_task()], "a request decided while a batch was being stored"
    granted = await asyncio.gather(*crowd)
    assert all(isinstance(g, ClaimGranted) and s is not None for g, s in granted)
    assert len({g.work for g, _ in granted} | {grant.work}) == 4, "each piece once"
    assert [t.get_name() for t in deciders[1:]] == ["write"] * 3, "the queued requests were not decided as a batch"
