"""What a run budget keeps back near its end (`cascade.runs_to_finish`), on a ladder folded from a
story of events: an open candidate's seeds and the climb its win would start, the same for an
explore under way, nothing for a hopeless candidate."""

from __future__ import annotations

from blackboard.cascade import runs_to_finish
from blackboard.events import (
    ArenaOpened, ClaimGranted, ClaimReleased, HypothesisApproved, HypothesisProposed, PatchAccepted, PatchSubmitted,
    WorkQueued,
)  # fmt: skip
from blackboard.state import State
from swarm.ground.settings import BoardSettings
from tests.blackboard.storyline import ARENA, BASE, BASELINE_CODE, Story

UPPER = "small/cpu/abcdef012345"


def ladder_with_a_candidate() -> Story:
    """tiny (best: its baseline, 1.91 +- 0.01) -> small (its baseline waits for a climber); p1 on tiny
    explored at 1.89, a candidate with its two replications queued."""
    s = Story()
    for arena, base in [(ARENA, BASE), (UPPER, "p-base-small")]:
        s.add(ArenaOpened, by="n1", arena=arena, baseline_patch=base, fingerprint="f" * 64, tier=arena.split("/")[0],
              hardware="cpu", baseline_code=BASELINE_CODE, baseline_hash="h-" + base)  # fmt: skip
    s.baseline_promoted()
    s.explored(1.89)
    for seed in (1, 2):
        s.add(WorkQueued, work=f"w-rep-{seed}", work_kind="replicate", arena=ARENA, ref="p1", seed=seed, priority=5)
    return s


def fold(story: Story) -> State:
    state = State(BoardSettings(ladder=["tiny", "small"]))
    for seq, event in story.events:
        state.apply(event, seq)
    return state


def test_an_open_candidate_keeps_back_its_seeds_and_the_climb_its_win_would_start() -> None:
    state = fold(ladder_with_a_candidate())
    assert state.patches["p1"].candidate and state.hopeless(state.patches["p1"]) is None
    assert runs_to_finish(state) == 2 + 3 + 3, "its two seeds, small's waiting baseline, the transfer's seeds"


def test_a_hopeless_candidate_keeps_back_nothing() -> None:
    story = ladder_with_a_candidate()
    story.add(ClaimGranted, claim="c-rep-1", work="w-rep-1", agent="r1", expires_at=story.now + 30)
    story.run("r-p1-1", "p1", "w-rep-1", "r1", seed=1, purpose="replicate", val_bpb=2.00)
    story.add(ClaimReleased, claim="c-rep-1", done=True)
    state = fold(story)
    assert state.hopeless(state.patches["p1"]) is not None  # the last seed would need 1.57 after 1.89 and 2.00
    assert runs_to_finish(state) == 0


def test_an_explore_under_way_keeps_back_what_its_candidate_would_need() -> None:
    story = ladder_with_a_candidate()
    story.add(HypothesisProposed, by="i1", hypothesis="h2", arena=ARENA, title="Longer warmup", intent={"knobs": {"W": 2}})
    story.add(HypothesisApproved, hypothesis="h2")
    story.work("w-impl-2", "implement", "h2", "m1")  # granted: its explore has not reported
    state = fold(story)
    assert runs_to_finish(state) == 2 + 2 + 3 + 3, "p1's seeds, the explore's would-be seeds, one climb for the rung"
    story.add(PatchSubmitted, by="m1", patch="p2", arena=ARENA, hypothesis="h2", work="w-impl-2", code="W = 2\n",
              diff="+W = 2\n", code_hash="h-p2")  # fmt: skip
    story.add(PatchAccepted, patch="p2")
    story.run("r-p2-0", "p2", "w-impl-2", "m1", seed=0, purpose="explore", val_bpb=1.95)  # no candidate
    assert runs_to_finish(fold(story)) == 2 + 3 + 3, "its run is in: nothing more kept back for it"
