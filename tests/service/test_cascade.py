"""The cascade on the sim ladder (sim -> sim-large), against a real service: winners climb, some
hold and some are lost (sim-large's optimum is sim's, shifted for some knobs), a winner on an older
parent is restacked onto the current best, code changes climb by a three-way merge or are recorded
as not transferable. A driver plays the agents with real parts: the sim tier's scores, the
implementer's porting (roles.implementer.port_transfer) and knob edits."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console

from agents import knobs
from agents.arena import ArenaInfo, describe, open_arena
from agents.brains import make_brain
from agents.brains.base import Accounting
from blackboard.cascade import runs_to_finish
from blackboard.client import Board, Claim
from blackboard.events import HypothesisProposed, PatchSubmitted, ReviewDone, RunFinished, TransferDone, decode, new_id
from blackboard.rules import code_hash
from blackboard.service import Service
from harness import sim
from harness.settings import HarnessSettings
from roles.implementer import PortByBrain, port_by_brain, port_transfer
from swarm import cascade
from swarm.ground.bus import Bus
from swarm.ground.settings import BoardSettings, BrainSettings
from swarm.history import gather_best, print_bests
from swarm.reader import ServiceReader
from tests.fakellm import FakeLLM, code_answer, fake_llm  # noqa: F401  (fake_llm: a fixture)

BASE = sim.BASELINE.read_text()
KINDS = ["baseline", "replicate", "transfer", "review", "implement"]


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> BoardSettings:
    # z = 1: the sim's seed noise (0.004) makes a threshold of about 0.004, below every gain used here.
    # Most tests here work the upper rung directly (agents.ideate_upper): its baseline runs at once.
    lazy = getattr(request, "param", False)
    return BoardSettings(lease_seconds=10.0, promotion_seeds=3, min_delta=0.002, z=1.0, ladder=["sim", "sim-large"],
                         lazy_upper=lazy)  # fmt: skip


class Driver:
    """Claims every kind of work and does it: sim runs, reviews (approve), ports, implementations."""

    def __init__(self, bus: Bus, service: Service) -> None:
        self.board, self.service = Board(bus, agent="driver", retry_seconds=20), service
        self.port_by: PortByBrain | None = None  # an LLM brain's port, where a merge conflicts

    async def until(self, done: Callable[[], bool], timeout: float = 120) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                claim = await self.board.claim(KINDS, ["*"], wait=1)
                if claim is not None:
                    await self.do(claim)

    async def do(self, claim: Claim) -> None:
        if claim.kind == "review":
            await self.board.publish(ReviewDone(by="driver", review=new_id("v"), patch=claim.ref, work=claim.work, verdict="approve"))
        elif claim.kind == "transfer":
            await port_transfer(self.board, "driver", claim, self.port_by)
            await self.board.release(claim.claim, done=True, reason="ported")
        elif claim.kind == "implement":
            hyp, parent = claim.hypothesis or {}, claim.parent or {}
            code = _implement(parent["code"], hyp["intent"])
            patch = PatchSubmitted(by="driver", patch=new_id("p"), arena=claim.arena, hypothesis=claim.ref, work=claim.work,
                                   parent=parent["id"], code=code, code_hash=code_hash(code))  # fmt: skip
            assert (await self.board.submit(patch)).ok
            await self.run(claim, patch.patch, code, "explore")
        else:
            await self.run(claim, claim.ref, (claim.patch or {})["code"], claim.kind)

    async def run(self, claim: Claim, patch: str, code: str, purpose: str) -> None:
        tier = self.service.state.arenas[claim.arena].tier
        result = sim.simulate(code, claim.seed or 0, tier=tier)
        await self.board.publish(RunFinished(
            by="driver", run=new_id("r"), patch=patch, arena=claim.arena, work=claim.work, seed=claim.seed or 0,
            purpose=purpose, tier=tier, device="cpu", node="n1", status=result["status"], val_bpb=result.get("val_bpb"),  # type: ignore[arg-type]
            fingerprint=self.service.state.arenas[claim.arena].fingerprint or "", synthetic=True, source_hash="x",
        ))  # fmt: skip

    async def try_idea(self, arena: str, title: str, parent: str | None = None, settled: bool = True, **intent: Any) -> str:
        """Propose an idea on `parent` (default: the current best), drive until its patch is settled (or, for
        one that is no candidate, has its explore run); its patch."""
        state = self.service.state
        parent = parent or state.arenas[arena].best
        event = HypothesisProposed(by="driver", hypothesis=new_id("h"), arena=arena, parent=parent, title=title, intent=intent)
        assert (await self.board.propose(event)).ok
        mine = lambda: [p for p in state.patches.values() if p.hypothesis == event.hypothesis and p.transfer is None]  # noqa: E731
        await self.until(lambda: bool(mine()) and (mine()[0].settled if settled else bool(mine()[0].runs)))
        return mine()[0].id


def _implement(code: str, intent: dict[str, Any]) -> str:
    """Knob values to set (relative to the parent: `times`), and a text edit (`replace`)."""
    found = knobs.read(code)
    changed = {name: _round(found[name] * factor, found[name]) for name, factor in intent.get("times", {}).items()}
    code = knobs.edit(code, changed)
    for old, new in intent.get("replace", []):
        code = code.replace(old, new, 1)
    return code


def _round(value: float, like: Any) -> Any:
    return round(value) if isinstance(like, int) else float(f"{value:.4g}")


def sim_arena(tier: str) -> ArenaInfo:
    return describe(tier, "cpu", HarnessSettings())


async def with_best(driver: Driver, info: ArenaInfo) -> None:
    await open_arena(driver.board, info)
    await driver.until(lambda: driver.service.state.arenas.get(info.id) is not None
                       and driver.service.state.arenas[info.id].best is not None)  # fmt: skip


def transfers_done(service: Service) -> int:
    return sum(1 for t in service.state.transfers.values() if t.outcome is not None)


async def stored_transfers(bus: Bus) -> list[TransferDone]:
    return [e for _, m in await bus.stored() if isinstance(e := decode(m.data), TransferDone)]


# Moves toward sim's optimum (harness.sim): SOFTCAP and BATCH_SIZE are unshifted in sim-large, so
# they hold there; DEPTH and WARMDOWN_FRACTION are shifted, so what wins on sim loses on sim-large.
HOLD = {"shrink the softcap": {"SOFTCAP": 0.627}, "bigger batches": {"BATCH_SIZE": 1.625}}
LOSE = {"deeper": {"DEPTH": 1.75}, "shorter warmdown": {"WARMDOWN_FRACTION": 0.515}}


async def test_winners_climb_the_sim_ladder_some_hold_some_are_lost_and_every_view_agrees(
    bus: Bus, service: Service
) -> None:
    driver = Driver(bus, service)
    low, high = sim_arena("sim"), sim_arena("sim-large")
    await with_best(driver, low)
    first = await driver.try_idea(low.id, "shrink the softcap", times=HOLD["shrink the softcap"])
    assert service.state.patches[first].outcome == "promoted"
    # No node serves sim-large yet: the winner waits for the rung, with the reason, and nothing is lost.
    assert not service.state.transfers
    [_, upper] = await cascade.rungs(driver.board.query, ["sim", "sim-large"])
    assert upper["waiting"] == "waiting: no node serves sim-large; 1 winner(s) of sim wait to climb"
    await with_best(driver, high)
    await driver.until(lambda: transfers_done(service) == 1)
    for title, times in [("deeper", LOSE["deeper"]), ("bigger batches", HOLD["bigger batches"]),
                         ("shorter warmdown", LOSE["shorter warmdown"])]:  # fmt: skip
        assert service.state.patches[await driver.try_idea(low.id, title, times=times)].outcome == "promoted"
    await driver.until(lambda: transfers_done(service) == 4)

    events = await stored_transfers(bus)
    outcomes = {service.state.hypotheses[service.state.patches[e.source].hypothesis].title: e.outcome for e in events}  # type: ignore[index]
    assert outcomes == {"shrink the softcap": "held", "deeper": "lost", "bigger batches": "held", "shorter warmdown": "lost"}
    assert all(not e.restack and e.from_arena == low.id and e.to_arena == high.id for e in events)
    assert all(e.gain_below is not None and e.gain_below > 0 for e in events)
    assert all((e.gain_above or 0) > 0 for e in events if e.outcome == "held")
    assert all((e.gain_above or 0) <= 0.002 for e in events if e.outcome == "lost")
    # The projection and `swarm best` (through the service, as `swarm best --url` reads) say the same.
    projected = (await driver.board.query("SELECT source, outcome FROM transfers ORDER BY seq"))["rows"]
    assert projected == [[e.source, e.outcome] for e in events]
    bests, rates = await gather_best(ServiceReader(bus, "test"))
    [rate] = rates
    assert (rate["lower"], rate["upper"], rate["transferred"], rate["held"], rate["lost"]) == ("sim", "sim-large", 4, 2, 2)
    assert math.isclose(rate["mean_gain_below"], sum(e.gain_below or 0 for e in events) / 4)
    upper_best = next(best for best in bests if best["arena"] == high.id)
    assert upper_best["from_below"] == "sim" and upper_best["patch"] == service.state.arenas[high.id].best
    console = Console(record=True, width=200)
    print_bests(console, bests, "table", rates)
    shown = console.export_text()
    assert "sim -> sim-large" in shown and "(from sim)" in shown


@pytest.mark.parametrize("settings", [True], indirect=True)
async def test_the_upper_rungs_baseline_waits_for_the_first_winner_below(bus: Bus, service: Service) -> None:
    driver = Driver(bus, service)
    low, high = sim_arena("sim"), sim_arena("sim-large")
    await with_best(driver, low)
    await open_arena(driver.board, high)
    await driver.until(lambda: high.id in service.state.arenas)
    loser = await driver.try_idea(low.id, "a wider softcap", settled=False, times={"SOFTCAP": 3.0})
    assert not service.state.patches[loser].candidate  # away from sim's optimum: no winner, the upper rung waits
    upper_work = lambda: [w for w in service.state.work.values() if w.arena == high.id]  # noqa: E731
    assert upper_work() == []
    [_, upper] = await cascade.rungs(driver.board.query, ["sim", "sim-large"])
    assert upper["waiting"] == "waiting: its baseline runs when the first winner of sim climbs"
    winner = await driver.try_idea(low.id, "shrink the softcap", times=HOLD["shrink the softcap"])
    assert service.state.patches[winner].outcome == "promoted"
    [line] = await cascade.undecided(driver.board.query, ["sim", "sim-large"])  # the summary, were it stopped now
    assert f"{winner} 'shrink the softcap': no outcome yet: waiting for {high.id}'s baseline (" in line, line
    begun = sum(1 for w in upper_work() if w.kind == "baseline" and w.status != "queued")
    assert runs_to_finish(service.state) == (3 - begun) + 3, "what a run budget keeps back: the rest of the baseline, the transfer's seeds"
    await driver.until(lambda: transfers_done(service) == 1)  # the baseline ran first, then the winner climbed
    assert [w.kind for w in sorted(upper_work(), key=lambda w: w.order)][:3] == ["baseline"] * 3
    [done] = await stored_transfers(bus)
    assert done.source == winner and done.to_arena == high.id and done.outcome == "held"
    [_, upper] = await cascade.rungs(driver.board.query, ["sim", "sim-large"])
    assert upper["waiting"] is None and upper["arenas"][0]["mean"] is not None


async def test_a_winner_on_an_older_parent_is_restacked_onto_the_current_best_and_the_gains_stack(
    bus: Bus, service: Service
) -> None:
    driver = Driver(bus, service)
    low = sim_arena("sim")
    await with_best(driver, low)
    baseline = service.state.arenas[low.id].best
    softcap = await driver.try_idea(low.id, "shrink the softcap", times=HOLD["shrink the softcap"])
    # Built on the baseline, not on the softcap winner; it beats the softcap winner by itself.
    warmdown = await driver.try_idea(low.id, "shorter warmdown", parent=baseline, times=LOSE["shorter warmdown"])
    assert service.state.arenas[low.id].best == warmdown
    await driver.until(lambda: transfers_done(service) == 1)
    [done] = await stored_transfers(bus)
    assert done.restack and done.source == warmdown and done.outcome == "held", done
    stacked = service.state.patches[done.patch]  # type: ignore[index]
    assert stacked.parent == warmdown and service.state.arenas[low.id].best == stacked.id
    both = knobs.read(stacked.code)
    assert (both["SOFTCAP"], both["WARMDOWN_FRACTION"]) == (knobs.read(service.state.patches[softcap].code)["SOFTCAP"],
                                                             knobs.read(service.state.patches[warmdown].code)["WARMDOWN_FRACTION"])  # fmt: skip
    assert {run.purpose for run in stacked.runs} == {"replicate"} and len(stacked.ok_values()) == 3


async def test_a_code_change_climbs_by_three_way_merge(bus: Bus, service: Service) -> None:
    driver = Driver(bus, service)
    low, high = sim_arena("sim"), sim_arena("sim-large")
    await with_best(driver, low)
    await with_best(driver, high)
    # The upper rung's best has moved on by its own winner (knobs), so the code it gets is not the lower's parent.
    await driver.try_idea(high.id, "upper: bigger batches", times=HOLD["bigger batches"])
    merged = await driver.try_idea(low.id, "softcap, and a helper import", times=HOLD["shrink the softcap"],
                                   replace=[["import math\n", "import math\nimport functools  # a code change\n"]])  # fmt: skip
    await driver.until(lambda: transfers_done(service) == 1)
    [done] = await stored_transfers(bus)
    assert done.source == merged and done.outcome == "held"
    ported = service.state.patches[done.patch]  # type: ignore[index]
    got = knobs.read(ported.code)
    assert "import functools  # a code change" in ported.code and ported.arena == high.id
    assert got["SOFTCAP"] == knobs.read(service.state.patches[merged].code)["SOFTCAP"]  # the winner's knob ...
    assert got["BATCH_SIZE"] == knobs.read(service.state.patches[ported.parent].code)["BATCH_SIZE"]  # ... onto the upper best
    assert (await driver.board.query("SELECT method FROM ports"))["rows"] == [["merge"]]


async def upper_rung_aliased(driver: Driver) -> tuple[ArenaInfo, ArenaInfo]:
    """Both rungs with a best; the upper rung's own winner changed `import time` first."""
    low, high = sim_arena("sim"), sim_arena("sim-large")
    await with_best(driver, low)
    await with_best(driver, high)
    await driver.try_idea(high.id, "upper: timer alias", times=HOLD["shrink the softcap"],
                          replace=[["import time\n", "import time as clock  # the upper rung's\n"]])  # fmt: skip
    return low, high


async def lower_alias_wins(driver: Driver, low: ArenaInfo) -> str:
    """A lower-rung winner that changes the same line another way: its patch, whose merge conflicts."""
    return await driver.try_idea(low.id, "lower: timer alias", times=HOLD["bigger batches"],
                                 replace=[["import time\n", "import time as t  # the lower rung's\n"]])  # fmt: skip


async def test_a_change_that_conflicts_with_the_upper_best_is_recorded_not_transferable_with_its_reason(
    bus: Bus, service: Service
) -> None:
    driver = Driver(bus, service)
    low, high = await upper_rung_aliased(driver)
    await lower_alias_wins(driver, low)
    await driver.until(lambda: transfers_done(service) == 1)
    [done] = await stored_transfers(bus)
    assert done.outcome == "not_transferable" and done.patch is None
    assert "three-way merge conflicts" in done.reason and "import time as clock" in done.reason
    rows = (await driver.board.query("SELECT outcome, reason FROM transfers"))["rows"]
    assert rows == [["not_transferable", done.reason]]


async def test_a_conflicting_change_is_ported_by_an_llm_brain_and_decided_like_any_transfer(
    bus: Bus, service: Service, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    # Made first: its SDK's import blocks the loop the in-process service shares, so not mid-way.
    brain = make_brain(BrainSettings(kind="openai", base_url=fake_llm.openai_url, model="gpt-test"), Accounting())
    try:
        driver = Driver(bus, service)
        low, high = await upper_rung_aliased(driver)
        upper_best = service.state.patches[service.state.arenas[high.id].best]  # type: ignore[index]
        ported = knobs.edit(upper_best.code, {"BATCH_SIZE": 26})  # what the model answers: the idea, by hand
        fake_llm.on("implement", code_answer(ported, "Bigger batches; kept the upper rung's timer alias."))
        driver.port_by = functools.partial(port_by_brain, brain, "Port faithfully.")
        winner = await lower_alias_wins(driver, low)
        await driver.until(lambda: transfers_done(service) == 1)
    finally:
        await brain.aclose()
    [done] = await stored_transfers(bus)
    assert done.source == winner and done.outcome == "held" and service.state.patches[done.patch].code == ported  # type: ignore[index]
    [request] = [r for r in fake_llm.requests if r.task == "implement"]
    assert "three-way merge conflicts" in request.text and "import time as t" in request.text
    assert (await driver.board.query("SELECT method FROM ports"))["rows"] == [["brain"]]
