"""A run that will never report is declared lost; a late result still wins."""

from __future__ import annotations

from pathlib import Path

from blackboard.events import ClaimGranted, RunFinished, RunLost, RunStarted
from blackboard.projection import Projection
from tests.blackboard.storyline import BASE, story

IDS = dict(run="r-1", patch="p-1", arena="a", work="w-1", seed=0, purpose="explore", tier="sim", device="cpu", node="n")


def status(projection: Projection) -> list[tuple[str, str | None]]:
    return projection.cursor().execute("SELECT status, reason FROM runs").fetchall()


def test_a_lost_run_is_marked_lost_with_its_reason(tmp_path: Path) -> None:
    with Projection(tmp_path / "p.duckdb") as projection:
        projection.apply_many([(1, RunStarted(by="agent", **IDS)), (2, RunLost(by="s1", run="r-1", reason="its agent stopped"))])
        assert status(projection) == [("lost", "its agent stopped")]


def test_a_result_that_arrives_after_the_run_was_declared_lost_wins(tmp_path: Path) -> None:
    finished = RunFinished(by="agent", **IDS, status="ok", val_bpb=1.5, fingerprint="f", source_hash="h")
    with Projection(tmp_path / "p.duckdb") as projection:
        projection.apply_many([(1, RunStarted(by="agent", **IDS)), (2, RunLost(by="s1", run="r-1", reason="gone")),
                               (3, finished)])  # fmt: skip
        assert status(projection) == [("ok", None)]


def test_a_lost_declaration_after_the_result_changes_nothing(tmp_path: Path) -> None:
    finished = RunFinished(by="agent", **IDS, status="crash", reason="boom", fingerprint="f", source_hash="h")
    with Projection(tmp_path / "p.duckdb") as projection:
        projection.apply_many([(1, finished), (2, RunLost(by="s1", run="r-1", reason="gone"))])
        assert status(projection) == [("crash", "boom")]



def test_how_events_fall_into_batches_never_changes_the_projection(tmp_path: Path) -> None:
    """The service applies in batches of whatever arrived; a rebuild in batches of thousands."""
    events = story().events
    seq = events[-1][0]
    run = next(e for _, e in events if isinstance(e, RunStarted) and e.patch != BASE)  # a patch with a hypothesis
    lost = RunStarted(by="agent", **{**IDS, "patch": run.patch, "run": "r-lost", "work": run.work})
    events = [*events, (seq + 1, lost), (seq + 2, RunLost(by="s1", run="r-lost", reason="its agent stopped"))]
    with Projection(tmp_path / "all.duckdb") as whole:
        whole.apply_many(events)
        for size in (1, 2, 5):
            with Projection(tmp_path / f"by{size}.duckdb") as batched:
                for start in range(0, len(events), size):
                    batched.apply_many(events[start : start + size])
                assert batched.differences(whole) == [], f"batches of {size}"


def test_a_seed_run_twice_counts_once_in_the_promotion_rule() -> None:
    """A holder whose claim expired reports late beside the re-granted run: one seed, one value."""
    from blackboard.decisions import decide
    from blackboard.events import ClaimExpired
    from blackboard.state import State
    from swarm.ground.settings import BoardSettings
    from tests.blackboard.storyline import ARENA, BASE, BASELINE_CODE, Story
    from blackboard.events import ArenaOpened

    s = Story()
    s.add(ArenaOpened, arena=ARENA, baseline_patch=BASE, fingerprint="f" * 64, tier="tiny", hardware="cpu",
          baseline_code=BASELINE_CODE, baseline_hash="h-base")  # fmt: skip
    first = s.work("w-0", "baseline", BASE, "slow", seed=0)
    s.add(ClaimExpired, claim=first)
    s.add(ClaimGranted, claim="c-again", work="w-0", agent="quick", expires_at=s.now + 30)
    s.run("r-quick", BASE, "w-0", "quick", seed=0, purpose="baseline", val_bpb=1.90)
    s.run("r-late", BASE, "w-0", "slow", seed=0, purpose="baseline", val_bpb=1.70)
    s.work("w-1", "baseline", BASE, "quick", seed=1)
    s.run("r-1", BASE, "w-1", "quick", seed=1, purpose="baseline", val_bpb=1.92)
    state = State(BoardSettings(promotion_seeds=3))
    for seq, event in s.events:
        state.apply(event, seq)
    assert state.patches[BASE].ok_values() == [1.90, 1.92], "the first stored value of each seed, once"
    assert len(state.patches[BASE].runs) == 3, "the late run is still recorded"
    assert decide(state, "arena", ARENA) is not None and decide(state, "arena", ARENA).kind == "work_queued"  # type: ignore[union-attr]


def test_a_late_result_that_finishes_re_granted_work_voids_the_new_holders_run() -> None:
    from blackboard.decisions import decide
    from blackboard.events import ArenaOpened, ClaimExpired
    from blackboard.state import State
    from swarm.ground.settings import BoardSettings
    from tests.blackboard.storyline import ARENA, BASE, BASELINE_CODE, Story

    s = Story()
    s.add(ArenaOpened, arena=ARENA, baseline_patch=BASE, fingerprint="f" * 64, tier="tiny", hardware="cpu",
          baseline_code=BASELINE_CODE, baseline_hash="h-base")  # fmt: skip
    first = s.work("w-0", "baseline", BASE, "cut-off", seed=0)
    ident = dict(patch=BASE, arena=ARENA, work="w-0", seed=0, purpose="baseline", tier="tiny", device="cpu", node="n")
    s.add(RunStarted, run="r-cut", by="cut-off", **ident)
    s.add(ClaimExpired, claim=first)
    s.add(ClaimGranted, claim="c-again", work="w-0", agent="second", expires_at=s.now + 30)
    s.add(RunStarted, run="r-second", by="second", **ident)
    s.add(RunFinished, run="r-cut", by="cut-off", **ident, status="ok", val_bpb=1.9, fingerprint="f" * 64, source_hash="h")
    state = State(BoardSettings())
    for seq, event in s.events:
        state.apply(event, seq)
    assert state.work["w-0"].status == "done" and "c-again" not in state.claims
    lost = decide(state, "run", "r-second")
    assert isinstance(lost, RunLost) and "finished by another holder's result" in lost.reason
