"""Claims against a real service: granted exactly once, expired when the holder dies, fair."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from blackboard.client import Board
from blackboard.events import AgentJoined, AgentLeft, ClaimGranted, decode
from blackboard.service import Service
from swarm.ground.bus import Bus
from swarm.ground.errors import BoardError
from swarm.ground.settings import BoardSettings
from swarm.natsserver import NatsServer
from tests.service.conftest import ARENA, hypothesis, open_arena, running_service, wait_leading

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
    held = service.state.work[granted.strip()].claim
    assert held is not None
    lease, first_expiry = service.settings.lease_seconds, service.state.claims[held].expires_at
    async with asyncio.timeout(120):  # heartbeats carry it past two leases: renewals move its expiry on
        while service.state.claims[held].expires_at < first_expiry + 2 * lease:
            await asyncio.sleep(0.05)
    assert service.state.work[granted.strip()].status == "claimed", "heartbeats must keep the claim alive"
    holder.kill()
    holder.wait()
    claim = await Board(board.bus, agent="survivor").claim(["implement"], [ARENA], wait=30)
    assert claim is not None and claim.work == granted.strip()
    rows = (await board.query(f"SELECT status, reason FROM claims WHERE claim = '{held}'"))["rows"]
    assert rows == [["expired", "its lease ran out"]], "re-granted because the dead holder's lease ran out"


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
    cap = service.settings.max_claims_per_agent
    with pytest.raises(BoardError, match=f"^claim: greedy already holds {cap} claims$"):
        await greedy.claim(["implement"], [ARENA], wait=1)


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


async def test_a_restarted_agent_is_granted_work_at_once_and_its_earlier_process_claims_end(
    bus: Bus, tmp_path: Path
) -> None:
    """The supervisor restarts a crashed agent under the same id: its dead process's claims (a long
    lease away from expiring) must not count against the new one, and they go back to the pool."""
    settings = BoardSettings(lease_seconds=120, max_claims_per_agent=2)
    async with running_service(bus, tmp_path / "board.duckdb", settings) as service:
        await wait_leading(service)
        board = Board(bus, agent="tester")
        work = await queue_implement_work(board, service, 3)
        crashed = Board(bus, agent="impl-0")
        old = [await crashed.claim(["implement"], [ARENA], wait=5) for _ in range(2)]
        assert all(c is not None for c in old)
        await board.publish(AgentJoined(by="impl-0", agent="impl-0", role="implementer", node="n", pid=2))
        restarted = Board(bus, agent="impl-0")
        claims = []
        async with asyncio.timeout(60):  # the lease is 120 s: only the join can free the id this soon
            while len(claims) < 2:
                try:
                    claim = await restarted.claim(["implement"], [ARENA], wait=5)
                except BoardError as exc:  # the join not yet applied: asked again, as an agent does
                    assert "already holds 2 claims" in str(exc)
                    continue
                if claim is not None:
                    claims.append(claim)
                    await restarted.release(claim.claim, done=True)
        assert not {c.claim for c in old} & service.state.claims.keys(), "the earlier process's claims ended"
        assert {c.work for c in claims} <= work


async def test_a_grant_whose_agent_left_goes_back_to_the_pool_even_as_the_swarm_stops(bus: Bus, tmp_path: Path) -> None:
    """A stopping agent gives up a claim request the service may already have granted: the reply finds
    nobody, so the grant is never released by it. Its leaving hands such claims back (seen: a
    Ctrl-C'd swarm's board showing two claims held for good), also when the service stops next."""
    settings = BoardSettings(lease_seconds=120)
    db = tmp_path / "board.duckdb"
    async with running_service(bus, db, settings) as service:
        await wait_leading(service)
        board = Board(bus, agent="tester")
        work = await queue_implement_work(board, service, 2)
        leaver = Board(bus, agent="leaver")
        first = await leaver.claim(["implement"], [ARENA], wait=5)
        assert first is not None
        await board.publish(AgentLeft(by="leaver", agent="leaver", reason="stopped by signal"))
        async with asyncio.timeout(60):  # the lease is 120 s: only the leaving can free it this soon
            while first.claim in service.state.claims:
                await asyncio.sleep(0.05)
        assert service.state.work[first.work].status == "queued"
        await board.publish(AgentJoined(by="leaver", agent="leaver", role="implementer", node="n", pid=3))
        second = await leaver.claim(["implement"], [ARENA], wait=5)
        assert second is not None and {first.work, second.work} <= work
        await board.publish(AgentLeft(by="leaver", agent="leaver", reason="stopped by signal"))
        # the context stops the service now, at once: it still hands the claim back before it goes
    with duckdb.connect(str(db), read_only=True) as projection:
        rows = projection.execute("SELECT status, reason FROM claims WHERE agent = 'leaver'").fetchall()
    assert rows == [("released", "agent leaver left before the grant reached it")] * 2


async def test_a_refused_claim_is_not_fatal_to_an_agent(bus: Bus, service: Service, tmp_path: Path) -> None:
    from agents.runtime import AgentSpec, Context
    from roles.replicator import Replicator
    from swarm.ground.settings import Settings

    board = Board(bus, agent="capped")
    await queue_implement_work(board, service, service.settings.max_claims_per_agent + 1)
    for _ in range(service.settings.max_claims_per_agent):
        assert await board.claim(["implement"], [ARENA], wait=5) is not None
    spec = AgentSpec("capped", Replicator, "n", "nats://unused", tmp_path)
    ctx = Context(spec, Settings(), board, None, board.heartbeat(1.0))
    assert await ctx.claim(["implement"], [ARENA], wait=1) is None
    assert ctx.doing.startswith("waiting for the board") and "already holds" in ctx.doing


async def test_a_retried_claim_request_gets_the_same_grant_back(board: Board, service: Service) -> None:
    """The reply to a grant was lost (a cut link): the client asks again under the same request id."""
    work = await queue_implement_work(board, service, 2)
    body = {"agent": "cut-off", "kinds": ["implement"], "arenas": [ARENA], "wait": 1, "request": "q-once"}
    first = await board.ask("claim", body)
    again = await board.ask("claim", body)
    assert first is not None and again == first, "the retry must get the first grant, not a second claim"
    assert len(service.state.held["cut-off"]) == 1 and service.state.queue_depths()["implement"] == 1
    assert first["work"] in work



async def test_a_release_hands_over_the_next_claim_in_the_same_request(bus: Bus, board: Board, service: Service) -> None:
    """An agent at its cap of two claims gives one back and takes the next in one request, stored as one
    event (a grant carrying the release): one write; a retry of that request gets the same grant back."""
    await queue_implement_work(board, service, 4)
    worker = Board(board.bus, agent="worker")
    first, second = [await worker.claim(["implement"], [ARENA], wait=10) for _ in range(2)]
    assert first is not None and second is not None
    nxt = await worker.release_and_claim(first.claim, False, "handed back", ["implement"], [ARENA], wait=1)
    assert nxt is not None and nxt.work not in (first.work, second.work)
    assert service.state.held["worker"] == {second.claim, nxt.claim}
    [grant] = [e for _, m in await bus.stored() if isinstance(e := decode(m.data), ClaimGranted) and e.claim == nxt.claim]
    assert grant.releasing is not None and (grant.releasing.claim, grant.releasing.done) == (first.claim, False)
    rows = (await board.query(f"SELECT status, reason FROM claims WHERE claim = '{first.claim}'"))["rows"]
    assert rows == [["released", "handed back"]], "the projection folds the release the grant carries"
    assert service.state.work[first.work].status == "queued", "released undone: back in the pool"
    body = {"agent": "worker", "claim": second.claim, "done": False, "reason": "",
            "then": {"kinds": ["implement"], "arenas": [ARENA], "wait": 1, "request": "q-hand-over"}}  # fmt: skip
    answer = await board.ask("release", body)
    assert answer is not None and await board.ask("release", body) == answer, "a retry gets the same grant"
    assert service.state.held["worker"] == {nxt.claim, answer["claim"]}
