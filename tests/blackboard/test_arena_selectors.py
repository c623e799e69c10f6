"""Which arenas a claim may take work from: named ones, "*" for any, "tier/*" for any of a tier."""

from __future__ import annotations

from blackboard.events import ArenaOpened, WorkQueued
from blackboard.state import State
from swarm.ground.settings import BoardSettings

LOWER, UPPER = "sim/cpu/000000000000", "sim-large/cpu/000000000000"


def state_with_review_work_on(arena: str) -> State:
    state = State(BoardSettings(ladder=["sim", "sim-large"]))
    for seq, name in enumerate((LOWER, UPPER), start=1):
        state.apply(ArenaOpened(by="n", arena=name, baseline_patch=f"p-base-{seq}", fingerprint="f" * 16,
                                tier=name.split("/")[0], hardware="cpu", baseline_code="X = 1\n", baseline_hash="h"), seq)  # fmt: skip
    state.apply(WorkQueued(by="service", work="w-1", work_kind="review", arena=arena, ref="p-1"), 3)
    return state


def test_a_tier_selector_takes_work_of_its_tier_only() -> None:
    state = state_with_review_work_on(UPPER)
    assert state.next_work(["review"], ["sim/*"]) is None  # a lower-rung node's reviewer leaves it
    assert state.next_work(["review"], [LOWER]) is None
    for selector in (["sim-large/*"], ["sim/*", "sim-large/*"], ["*"], [UPPER]):
        work = state.next_work(["review"], selector)
        assert work is not None and work.id == "w-1", selector
