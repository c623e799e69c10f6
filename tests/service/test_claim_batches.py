"""A crowd's claims against a real service: decided in large batches, stored as atomic batches, each
piece of work granted once and every release returning it."""

from __future__ import annotations

import asyncio

from blackboard.client import Board
from blackboard.service import Service
from blackboard.writer import ATOMIC_MIN_BATCH
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
