"""Agent processes against a real service: killed mid-run, stopped mid-run, burst mode."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agents.arena import describe
from agents.knobs import read
from agents.runtime import AgentSpec, Context
from blackboard.client import Board
from blackboard.events import HypothesisProposed, new_id
from blackboard.service import Service
from harness import sim
from roles import ROLES
from swarm.ground.bus import Bus
from swarm.natsserver import NatsServer
from swarm.ground.settings import BoardSettings, HarnessSettings, Settings
from tests.service.conftest import ARENA as ARENA_ID, open_arena, running_service, wait_leading

LEASE = 3.0


def agent(url: str, swarm_dir: Path, role: str, name: str, sim_seconds: float, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SWARM_HARNESS__SIM_SECONDS": str(sim_seconds), "SWARM_BOARD__LEASE_SECONDS": str(LEASE)}
    args = [sys.executable, "-m", "swarm", "-v", "agent", "--role", role, "--url", url, "--dir", str(swarm_dir), "--id", name,
            "--tier", "sim", "--device", "cpu", *extra]  # fmt: skip
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(swarm_dir / f"{name}.log", "wb"))


async def until(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def propose_one(board: Board, service: Service) -> tuple[str, str]:
    """An approved hypothesis in the sim arena; (hypothesis, arena)."""
    arena = describe("sim", "cpu", HarnessSettings()).id
    await until(lambda: arena in service.state.arenas)  # the first agent opens it
    baseline = read(sim.BASELINE.read_text())
    event = HypothesisProposed(by="test", hypothesis=new_id("h"), arena=arena, title="halve the head learning rate",
                               intent={"knobs": {"HEAD_LR": baseline["HEAD_LR"] / 2}})  # fmt: skip
    assert (await board.propose(event)).ok
    return event.hypothesis, arena


def runs_of(service: Service, hypothesis: str) -> list[tuple[str, str]]:
    return [(run.purpose, run.status) for patch in service.state.patches.values() if patch.hypothesis == hypothesis
            for run in patch.runs]  # fmt: skip


async def test_an_implementer_killed_mid_run_has_its_hypothesis_run_by_another_once(
    nats_server: NatsServer, bus: Bus, tmp_path: Path
) -> None:
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings(lease_seconds=LEASE)) as service:
        await wait_leading(service)
        board = Board(bus, agent="test")
        first = agent(nats_server.url, tmp_path, "implementer", "impl-a", 60)
        try:
            hypothesis, _ = await propose_one(board, service)
            await until(lambda: service.state.runs_started == 1)  # a is training it, for a minute
            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait)
            second = agent(nats_server.url, tmp_path, "implementer", "impl-b", 0.2)
            try:
                await until(lambda: runs_of(service, hypothesis) == [("explore", "ok")], timeout=120)
            finally:
                second.send_signal(signal.SIGTERM)
                await asyncio.to_thread(second.wait, 30)  # never block the loop: the service runs in it
        finally:
            first.kill()
        patches = [p for p in service.state.patches.values() if p.hypothesis == hypothesis]
        assert len(patches) == 1, "the second implementer must run the accepted patch, not write another"
        assert runs_of(service, hypothesis) == [("explore", "ok")]  # recorded once, by the survivor
        granted = (await board.query("SELECT agent, status FROM claims ORDER BY granted_at"))["rows"]
        assert [row[0] for row in granted] == ["impl-a", "impl-b"], "the dead agent's waiting request was served"
        assert granted[0][1] == "expired", "re-granted because the killed agent's lease ran out"
        await until(lambda: not service.state.running)  # the dead agent's run is declared lost
        runs = (await board.query("SELECT agent, status, reason FROM runs ORDER BY started_at"))["rows"]
        assert [(agent, status) for agent, status, _ in runs] == [("impl-a", "lost"), ("impl-b", "ok")]
        assert "stopped renewing" in runs[0][2]


async def test_a_stopped_agent_releases_its_claim_at_once(nats_server: NatsServer, bus: Bus, tmp_path: Path) -> None:
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings(lease_seconds=30)) as service:
        await wait_leading(service)
        board = Board(bus, agent="test")
        first = agent(nats_server.url, tmp_path, "implementer", "impl-a", 60)
        hypothesis, arena = await propose_one(board, service)
        await until(lambda: service.state.runs_started == 1)
        first.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait, 30) == 0
        [(reason,)] = (await board.query("SELECT reason FROM claims WHERE agent = 'impl-a'"))["rows"]
        assert "stopped by signal" in reason
        claim = await Board(bus, agent="next").claim(["implement"], [arena], wait=2)  # no lease to wait out
        assert claim is not None and claim.ref == hypothesis and claim.patch is not None
        left = (await board.query("SELECT status, left_reason FROM agents WHERE agent = 'impl-a'"))["rows"]
        assert left == [["left", "stopped by signal"]]
        await until(lambda: not service.state.running)
        [(status, why)] = (await board.query("SELECT status, reason FROM runs WHERE agent = 'impl-a'"))["rows"]
        assert status == "lost" and "stopped before it finished" in why


async def test_burst_mode_does_n_pieces_of_work_and_exits(nats_server: NatsServer, bus: Bus, tmp_path: Path) -> None:
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings(lease_seconds=LEASE)) as service:
        await wait_leading(service)
        replicator = agent(nats_server.url, tmp_path, "replicator", "rep", 0.1, "--burst", "3")
        assert await asyncio.to_thread(replicator.wait, 120) == 0
        arena = next(iter(service.state.arenas.values()))
        assert service.state.arenas[arena.id].best == arena.baseline_patch  # its 3 baseline seeds made the best
        assert service.state.runs_finished == 3 and not service.state.claims


@pytest.mark.parametrize("sim_seconds", [60.0, 1.0], ids=["still training", "finished meanwhile"])
async def test_an_agent_whose_claim_expired_while_frozen_drops_its_run_instead_of_reporting_it_late(
    nats_server: NatsServer, bus: Bus, tmp_path: Path, sim_seconds: float
) -> None:
    """Frozen (as a partition would cut it off) past its lease, a replicator finds its claim lost on
    waking: it drops that run, so the seed is measured by the re-granted run alone. Its run is still
    training then, or finished meanwhile (the sim runs in another process): then the result and the
    overdue renewal are both due on waking, and the agent asks before it reports."""
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings(lease_seconds=LEASE)) as service:
        await wait_leading(service)
        rep = agent(nats_server.url, tmp_path, "replicator", "rep", sim_seconds)
        try:
            await until(lambda: service.state.runs_started == 1)
            [first] = service.state.running
            rep.send_signal(signal.SIGSTOP)
            await until(lambda: first in service.state.lost, timeout=60)  # its claim expired, its run declared lost
            rep.send_signal(signal.SIGCONT)
            await until(lambda: service.state.runs_started >= 2, timeout=120)  # it went on to the next piece
            assert not any(run.id == first for p in service.state.patches.values() for run in p.runs), \
                "the run of the lost claim must be dropped, not reported"
            assert "lost claim" in (tmp_path / "rep.log").read_text()
        finally:
            rep.send_signal(signal.SIGCONT)
            rep.kill()
            await asyncio.to_thread(rep.wait)


async def test_work_whose_claim_expired_unrenewed_is_cancelled_before_its_result_goes_out(
    bus: Bus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The mechanism behind the test above, without its race: a claim that nobody renewed expires; the
    work done under it asks before reporting (`confirm_claims`) and is cancelled, not reported."""
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings(lease_seconds=LEASE)) as service:
        await wait_leading(service)
        board = Board(bus, "frozen", retry_seconds=20)
        await open_arena(board)
        claim = await board.claim(["baseline"], [ARENA_ID], wait=10)
        assert claim is not None
        ctx = Context(AgentSpec("frozen", ROLES["replicator"], "n1", "", tmp_path), Settings(), board, None,
                      board.heartbeat(LEASE / 3))  # fmt: skip
        ctx.heartbeat.on_lost = ctx.claim_lost
        ctx.heartbeat.hold(claim.claim)  # held, but its heartbeat never beats: as if the agent were frozen
        await until(lambda: claim.claim not in service.state.claims, timeout=60)
        reported: list[str] = []

        async def work() -> str:
            await ctx.confirm_claims()
            reported.append("the result")  # what run_job publishes next
            return "done"

        assert await ctx.while_held(claim.claim, work()) is None
    assert reported == [] and claim.claim in ctx.heartbeat.lost
    assert any("lost claim" in record.getMessage() for record in caplog.records)


async def test_an_agent_waits_out_an_outage_longer_than_any_retry_and_its_result_is_stored_once(
    nats_server: NatsServer, bus: Bus, tmp_path: Path
) -> None:
    """NATS freezes for 35 s (longer than a publish's or a request's own retries) while a run trains:
    the agent waits, then stores its result (once) and finishes its burst."""
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings(lease_seconds=60)) as service:
        await wait_leading(service)
        rep = agent(nats_server.url, tmp_path, "replicator", "rep", 2.0, "--burst", "2")
        try:
            await until(lambda: service.state.runs_started == 1)
            assert nats_server.process is not None
            nats_server.process.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(35)  # the outage itself: what the agent must outlast
            finally:
                nats_server.process.send_signal(signal.SIGCONT)
            assert await asyncio.to_thread(rep.wait, 180) == 0, (tmp_path / "rep.log").read_text()[-3000:]
            await until(lambda: service.state.runs_finished == 2, timeout=60)
            log = (tmp_path / "rep.log").read_text()
            assert "waiting for the board" in log and "the board answers again" in log
        finally:
            rep.kill()
            await asyncio.to_thread(rep.wait)
        assert service.leader and len({r.id for p in service.state.patches.values() for r in p.runs}) == 2
