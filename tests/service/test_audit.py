"""A promoted best's score on the held-out audit split: shown to people (`swarm best`, `swarm show`),
and in nothing an agent reads, so no prompt a role builds from its reads can contain it."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from agents.arena import open_arena
from blackboard.events import AuditScored, HypothesisProposed, decode, new_id
from blackboard.service import Service
from harness import sim
from harness.settings import HarnessSettings
from roles.replicator import audit
from swarm.ground.bus import Bus
from swarm.history import gather_best, print_bests, print_show
from swarm.reader import ServiceReader
from tests.service.test_cascade import HOLD, Driver, settings, sim_arena  # noqa: F401  (settings: the sim ladder's board)

AUDIT = 9.87654321  # a score no run produces: any trace of it is a leak


async def test_an_audit_score_shows_in_best_and_show_and_in_nothing_an_agent_reads(bus: Bus, service: Service) -> None:
    driver = Driver(bus, service)
    low = sim_arena("sim")
    await open_arena(driver.board, low)
    await driver.until(lambda: low.id in service.state.arenas and service.state.arenas[low.id].best is not None)
    best = service.state.arenas[low.id].best
    await driver.board.publish(AuditScored(by="auditor", patch=best, arena=low.id, status="ok", val_bpb=AUDIT))  # type: ignore[arg-type]
    reader = ServiceReader(bus, "test")
    bests, _ = await gather_best(reader)
    assert [b["audit_bpb"] for b in bests] == [AUDIT]
    console = Console(record=True, width=200)
    print_bests(console, bests, "table")
    print_show(console, await reader.show(best), "table")  # type: ignore[arg-type]
    assert console.export_text().count("9.8765") == 2  # the best's table, and the patch's audits

    # What agents read: the ideator (stats, best, trials, codes), the implementer and the reviewer (claims).
    idea = HypothesisProposed(by="driver", hypothesis=new_id("h"), arena=low.id, parent=best, title="halve the softcap",
                              intent={"knobs": {"SOFTCAP": 7.5}})  # fmt: skip
    assert (await driver.board.propose(idea)).ok
    claim = await driver.board.claim(["implement"], [low.id], wait=10)
    reads = [await driver.board.stats(), await driver.board.best(low.id), await driver.board.ask("trials", {"arena": low.id}),
             await driver.board.ask("codes", {"patches": [best]}), claim.model_dump() if claim else None]  # fmt: skip
    assert claim is not None
    for read in reads:
        assert "9.8765" not in json.dumps(read, default=str), read


async def test_every_promoted_best_is_audited_by_a_device_agent_and_its_audit_score_is_recorded(
    bus: Bus, service: Service, tmp_path: Path
) -> None:
    """The board queues an audit for each BestPromoted (the baseline and a winner); the replicator's
    audit runs the best's code on the sim with the audit split's own noise and publishes AuditScored."""
    driver = Driver(bus, service)
    low = sim_arena("sim")
    await open_arena(driver.board, low)
    await driver.until(lambda: service.state.arenas.get(low.id) is not None and service.state.arenas[low.id].best is not None)
    winner = await driver.try_idea(low.id, "shrink the softcap", times=HOLD["shrink the softcap"])
    assert service.state.arenas[low.id].best == winner
    harness = HarnessSettings(sim_seconds=0.1)
    audited = []
    while len(audited) < 2:
        claim = await driver.board.claim(["audit"], [low.id], wait=30)
        assert claim is not None, "a promoted best without its audit work"
        audited.append(await audit(driver.board, "replicator-1", claim, "sim", "cpu", harness, tmp_path))
        await driver.board.release(claim.claim, done=True, reason="audited")
    baseline = service.state.arenas[low.id].baseline_patch
    assert sorted(a.patch for a in audited) == sorted([baseline, winner])
    assert await driver.board.claim(["audit"], [low.id], wait=1) is None  # one audit per best
    stored = [e for _, m in await bus.stored() if isinstance(e := decode(m.data), AuditScored)]
    for event in stored:
        code = service.state.patches[event.patch].code
        assert event.status == "ok" and event.val_bpb == sim.simulate(code, 0, tier="sim", split="audit")["val_bpb"]
        assert event.val_bpb != sim.simulate(code, 0, tier="sim")["val_bpb"]  # its own noise, not the search's score
    assert {e.patch for e in stored} == {baseline, winner}
    assert len(service.state.patches[winner].runs) == 3  # explore and two replications: the audit adds no seed
    bests, _ = await gather_best(ServiceReader(bus, "test"))
    [best] = [b for b in bests if b["arena"] == low.id]
    assert best["audit_bpb"] == next(e.val_bpb for e in stored if e.patch == winner)
