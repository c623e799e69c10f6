"""The summary `swarm up` prints at the end: lost runs are lost, unfinished candidates are listed."""

from __future__ import annotations

from pathlib import Path

from blackboard.client import Board
from blackboard.events import ClaimExpired, PatchAccepted, PatchSubmitted, RunLost, RunStarted, WorkQueued, envelope
from swarm.ground.bus import Bus
from swarm.ground.settings import BoardSettings
from swarm.up import summarize
from tests.blackboard.storyline import ARENA, story
from tests.service.conftest import running_service


async def test_the_summary_counts_lost_runs_as_lost_and_lists_unfinished_candidates_beside_a_promotion(
    bus: Bus, tmp_path: Path
) -> None:
    s = story()  # a promotion, an oom run (failed), open work at the end
    s.add(PatchSubmitted, by="m1", patch="p5", arena=ARENA, hypothesis=None, code="LR = 0.03\n", code_hash="h-p5")
    s.add(PatchAccepted, patch="p5")
    s.run("r-p5-0", "p5", None, "m1", seed=0, purpose="explore", val_bpb=1.70)
    s.add(WorkQueued, work="w-rep-5", work_kind="replicate", arena=ARENA, ref="p5", seed=1)  # never run
    claim = s.work("w-rep-5b", "replicate", "p5", "r1", seed=2)
    s.add(RunStarted, run="r-p5-2", patch="p5", arena=ARENA, work="w-rep-5b", seed=2, purpose="replicate", tier="tiny",
          device="cpu:0", node="n2", by="r1")  # fmt: skip
    s.add(ClaimExpired, claim=claim)
    s.add(RunLost, run="r-p5-2", reason="its agent stopped renewing its claim before the run finished")
    lease = await bus.leader_lease()
    assert await lease.acquire("elsewhere")  # the service stands by: it reads, and decides nothing of its own
    for _, event in s.events:
        await bus.publish(envelope(event))
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings(promotion_seeds=3)):
        lines = await summarize(Board(bus, agent="summary"), seeds=3)
    assert lines[0] == "runs: 9 recorded, 7 ok, 1 failed, 1 lost, 0 unfinished", lines
    assert any(line.startswith("promoted in") for line in lines)
    assert lines[-2:] == ["left unfinished:", "  p5 None was a candidate with 1 of 3 seeds when the swarm stopped"]
