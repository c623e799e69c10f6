"""What the state keeps as events are applied so that a grant does not walk the whole history (work
counted by arena, kind and status; the open candidates; each arena's seed spread; each idea's
patches) agrees, after every event of a story, with what a walk over everything would say."""

from __future__ import annotations

from collections import Counter

from blackboard.events import (
    ClaimExpired, ClaimGranted, ClaimReleased, PatchAccepted, PatchSubmitted, ReplicationDone, WorkCancelled, WorkQueued,
)  # fmt: skip
from blackboard.rules import seed_spread
from blackboard.state import State
from swarm.ground.settings import BoardSettings
from tests.blackboard.storyline import ARENA, OTHER, Story, story


def eventful_story() -> Story:
    """The shared story, then work that goes back to the pool (an expiry, a release not done), work
    cancelled, and a candidate that is settled without a promotion."""
    s = story()
    s.add(ClaimExpired, claim="c-w-impl-4")  # back to the queue
    s.add(ClaimGranted, claim="c-again", work="w-impl-4", agent="m2", expires_at=s.now + 30)
    s.add(ClaimReleased, claim="c-again", done=False, reason="stopping")  # back again
    s.add(WorkCancelled, work="w-impl-5", reason="no longer needed")
    s.add(WorkQueued, work="w-rep-8", work_kind="replicate", arena=ARENA, ref="p2", seed=1)  # p2 settled: stays closed
    s.add(PatchSubmitted, by="m1", patch="p5", arena=ARENA, code="LR = 0.05\n", code_hash="h-p5")
    s.add(PatchAccepted, patch="p5")
    s.run("r-p5-0", "p5", None, "m1", seed=0, purpose="explore", val_bpb=1.84)
    s.add(WorkQueued, work="w-rep-9", work_kind="replicate", arena=ARENA, ref="p5", seed=1)  # p5: a candidate
    s.add(ClaimGranted, claim="c-rep-9", work="w-rep-9", agent="r1", expires_at=s.now + 30)
    s.run("r-p5-1", "p5", "w-rep-9", "r1", seed=1, purpose="replicate", val_bpb=1.86)  # its spread changes
    s.add(WorkQueued, work="w-other", work_kind="baseline", arena=OTHER, ref="p-base-gpu")
    s.add(ReplicationDone, patch="p5", arena=ARENA, n=2, mean=1.85, std=0.01, outcome="not_better", explanation="no")
    return s


def test_the_kept_counts_candidates_and_spreads_agree_with_a_walk_over_everything_after_every_event() -> None:
    state, seen = State(BoardSettings()), Counter()
    for seq, event in eventful_story().events:
        state.apply(event, seq)
        for arena in state.arenas:
            state.spread(arena)  # asked between events, as the decisions do: a kept answer must be forgotten in time
        walked = Counter((w.arena, w.kind, w.status) for w in state.work.values())
        assert +state.counts == walked, f"after event {seq} ({event.kind})"
        assert state.open_candidates == {p.id for p in state.patches.values() if p.candidate and not p.settled}
        of: dict[str, list[str]] = {}
        for patch in state.patches.values():
            if patch.hypothesis is not None:
                of.setdefault(patch.hypothesis, []).append(patch.id)
        assert state.patches_of == of
        for arena in state.arenas.values():
            groups = [state.patches[p].ok_values() for p in arena.patches]
            assert state.spread(arena.id) == seed_spread([values for values in groups if len(values) >= 2])
        seen.update(status for _, _, status in walked.elements())
        seen.update(f"candidate {p}" for p in state.open_candidates)
    assert {"queued", "claimed", "done", "candidate p1", "candidate p5"} <= set(seen), "the story moves every index"
    assert state.queue_depths(ARENA) == {"implement": 1, "replicate": 1}
    assert state.queue_depths() == {"implement": 1, "replicate": 1, "baseline": 1}
