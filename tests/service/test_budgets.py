"""Budgets hold: the swarm's run budget counts every run (repairs too), its LLM budget every dollar."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.brains.base import Usage
from agents.runtime import _Budget
from blackboard.client import Board
from blackboard.events import RunFinished, RunStarted, UsageRecorded
from blackboard.service import Service
from swarm.ground.bus import Bus
from swarm.ground.settings import BoardSettings
from tests.service.conftest import ARENA, running_service, wait_leading
from tests.service.test_claims import queue_implement_work
from tests.service.test_decisions import establish_baseline


async def test_a_repair_run_keeps_its_claim_and_counts_against_the_run_budget(bus: Bus, tmp_path: Path) -> None:
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings(max_runs=5)) as service:
        await wait_leading(service)
        await establish_baseline(Board(bus, agent="tester"))  # runs 1-3 of 5
        await queue_implement_work(Board(bus, agent="tester"), service, 3)
        first, second = Board(bus, agent="impl-a"), Board(bus, agent="impl-b")
        claim = await first.claim(["implement"], [ARENA], wait=5)
        assert claim is not None
        ids = dict(patch="p-x", arena=ARENA, work=claim.work, seed=0, purpose="explore", tier="tiny", device="cpu", node="n")
        await first.publish(RunStarted(by="impl-a", run="r-crash", **ids))
        await first.publish(RunFinished(by="impl-a", run="r-crash", **ids, status="crash", reason="boom",
                                        fingerprint="f" * 64, source_hash="h"))  # fmt: skip
        async with asyncio.timeout(30):
            while service.state.runs_finished < 4:
                await asyncio.sleep(0.05)
        assert claim.claim in service.state.claims, "a crashed run's holder keeps its claim to repair under it"
        assert await first.rerun(claim.claim), "one repair run: the fifth and last of the budget"
        assert service.state.runs_started + service.state.runs_reserved() == 5
        assert await second.claim(["implement"], [ARENA], wait=1) is None, "the budget is spent"
        await first.publish(RunStarted(by="impl-a", run="r-repair", **ids))
        async with asyncio.timeout(30):
            while service.state.runs_started < 5:
                await asyncio.sleep(0.05)
        assert not await first.rerun(claim.claim), "a second repair would be a sixth run"
        assert service.state.runs_started + service.state.runs_reserved() == 5


async def test_near_the_end_of_the_run_budget_a_new_idea_waits_for_the_runs_begun_work_needs(bus: Bus, tmp_path: Path) -> None:
    """Four runs, and the baseline needs three: one explore fits, a second would leave the baseline
    (and so every verdict) unfinished when the budget ends, so the agent gets a baseline run instead."""
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings(max_runs=4)) as service:
        await wait_leading(service)
        await queue_implement_work(Board(bus, agent="tester"), service, 2)
        kinds = ["implement", "baseline"]  # an agent that prefers new ideas
        first = await Board(bus, agent="a").claim(kinds, [ARENA], wait=5)
        second = await Board(bus, agent="b").claim(kinds, [ARENA], wait=5)
        assert first is not None and first.kind == "implement"
        assert second is not None and second.kind == "baseline", "the last three runs are the baseline's"


async def test_an_agent_counts_its_own_spend_at_once_and_the_others_from_the_board(bus: Bus, service: Service) -> None:
    other = Board(bus, agent="ideator-2")
    await other.publish(UsageRecorded(by="ideator-2", agent="ideator-2", provider="anthropic", model="m", input_tokens=1,
                                      output_tokens=1, cost_usd=0.6))  # fmt: skip
    budget = _Budget(Board(bus, agent="ideator-1"), 1.0)
    refreshing = asyncio.create_task(budget.refresh())
    try:
        async with asyncio.timeout(30):
            while budget.left() != 0.4:
                await asyncio.sleep(0.05)
        budget.record(Usage(provider="anthropic", model="m", input_tokens=1, output_tokens=1, cost_usd=0.5))
        assert budget.left() == 1.0 - 0.6 - 0.5, "its own call counts before any refresh"
        async with asyncio.timeout(30):  # stored for the others, and not counted twice by its own refresh
            while service.state.applied_seq < 2 or len((await other.query("SELECT * FROM usage"))["rows"]) < 2:
                await asyncio.sleep(0.05)
        assert abs(budget.left() - (1.0 - 1.1)) < 1e-9  # type: ignore[operator]
    finally:
        refreshing.cancel()
