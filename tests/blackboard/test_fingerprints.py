"""The board, not only `swarm join`, keeps incomparable results apart: a result whose harness
fingerprint is not its arena's is refused, visibly, and never counted."""

from __future__ import annotations

from pathlib import Path

from blackboard.events import ArenaOpened
from blackboard.projection import Projection
from blackboard.state import State
from swarm.ground.settings import BoardSettings
from tests.blackboard.storyline import ARENA, BASE, BASELINE_CODE, Story


def test_a_result_from_another_harness_is_refused_visibly_and_never_counted(tmp_path: Path) -> None:
    s = Story()
    s.add(ArenaOpened, arena=ARENA, baseline_patch=BASE, fingerprint="f" * 64, tier="tiny", hardware="cpu",
          baseline_code=BASELINE_CODE, baseline_hash="h-base")  # fmt: skip
    s.work("w-0", "baseline", BASE, "r1", seed=0)
    s.run("r-0", BASE, "w-0", "r1", seed=0, purpose="baseline", val_bpb=1.90)
    s.work("w-1", "baseline", BASE, "hand-started", seed=1)
    s.run("r-1", BASE, "w-1", "hand-started", seed=1, purpose="baseline", val_bpb=1.20)
    foreign = s.events[-1][1].model_copy(update={"fingerprint": "e" * 64})
    s.events[-1] = (s.events[-1][0], foreign)
    state = State(BoardSettings())
    for seq, event in s.events:
        state.apply(event, seq)
    assert state.patches[BASE].ok_values() == [1.90], "the other harness's number is not the arena's"
    assert "fingerprint eeeeeeeeeeee is not its arena's ffffffffffff" in state.refused["r-1"]
    with Projection(tmp_path / "board.duckdb") as projection:
        projection.apply_many(s.events)
        rows = projection.cursor().execute("SELECT run, status, reason FROM runs ORDER BY run").fetchall()
    assert [(run, status) for run, status, _ in rows] == [("r-0", "ok"), ("r-1", "refused")]
    assert "is not its arena's" in rows[1][2]
