"""A promoted best's score on the held-out audit split: shown to people (`swarm best`, `swarm show`),
and in nothing an agent reads, so no prompt a role builds from its reads can contain it."""

from __future__ import annotations

import json

from rich.console import Console

from agents.arena import open_arena
from blackboard.events import AuditScored, HypothesisProposed, new_id
from blackboard.service import Service
from swarm.ground.bus import Bus
from swarm.history import gather_best, print_bests, print_show
from swarm.reader import ServiceReader
from tests.service.test_cascade import Driver, settings, sim_arena  # noqa: F401  (settings: the sim ladder's board)

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
