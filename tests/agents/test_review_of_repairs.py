"""A repaired patch is reviewed against what was accepted (the hypothesis's parent), not its crashed attempt.

A crashed attempt that slipped in `torch.manual_seed(1234)` must not have that line pass review
because the repair only fixed something else: the offline brain's static rules see the whole edit.
"""

from __future__ import annotations

import time

from agents.arena import describe
from agents.brains.offline import OfflineBrain
from agents.knobs import edit, read
from blackboard.client import Claim
from harness import sim
from roles.common import Job, unified_diff
from roles.implementer import repair_patch
from roles.reviewer import review_task
from swarm.ground.settings import HarnessSettings

PARENT = sim.BASELINE.read_text()
SEEDED = "torch.manual_seed(1234)\n"


def crashed_and_repaired() -> tuple[str, str]:
    """The crashed attempt (a broken knob, and a seed) and its repair (the knob fixed, the seed kept)."""
    lr = read(PARENT)["MATRIX_LR"]
    crashed = edit(PARENT, {"MATRIX_LR": "fast"}) + SEEDED
    return crashed, edit(PARENT, {"MATRIX_LR": lr * 2}) + SEEDED


def implement_claim() -> Claim:
    return Claim(claim="c1", work="w1", kind="implement", arena="a1", ref="h1", seed=0, expires_at=time.time() + 60,
                 hypothesis={"id": "h1", "title": "double the matrix learning rate", "rationale": "", "intent": {}},
                 parent={"id": "p-parent", "code": PARENT})  # fmt: skip


def review_claim(patch: dict[str, object], codes: dict[str, str]) -> Claim:
    """The review claim as the board's service describes it: the parent is the patch's own parent."""
    parent = str(patch["parent"])
    return Claim(claim="c2", work="w2", kind="review", arena="a1", ref=str(patch["id"]), expires_at=time.time() + 60,
                 hypothesis={"id": "h1", "title": "double the matrix learning rate", "rationale": "", "intent": {}},
                 parent={"id": parent, "code": codes[parent]}, patch=patch)  # fmt: skip


async def test_a_seed_added_by_a_crashed_attempt_is_rejected_when_its_repair_is_reviewed() -> None:
    crashed, repaired = crashed_and_repaired()
    job = Job("p-crashed", crashed, describe("sim", "cpu", HarnessSettings()), 0, "explore", "w1", "double the lr")
    event = repair_patch("impl-1", "a1", implement_claim(), job, repaired)
    assert event.parent == "p-parent" and event.diff == unified_diff(PARENT, repaired)

    codes = {"p-parent": PARENT, "p-crashed": crashed}
    patch = {"id": event.patch, "code": event.code, "diff": event.diff, "parent": event.parent, "values": []}
    verdict = await OfflineBrain().review(review_task(review_claim(patch, codes), "Review."))
    assert verdict.verdict == "reject"
    assert any("sets seeds" in r and "manual_seed(1234)" in r for r in verdict.reasons), verdict.reasons


async def test_the_reviewer_diffs_the_code_itself_not_the_submitted_diff() -> None:
    crashed, repaired = crashed_and_repaired()
    codes = {"p-parent": PARENT}
    hidden = {"id": "p-2", "code": repaired, "diff": unified_diff(crashed, repaired), "parent": "p-parent", "values": []}
    task = review_task(review_claim(hidden, codes), "Review.")
    assert task.diff == unified_diff(PARENT, repaired) and "+torch.manual_seed(1234)" in task.diff
    assert (await OfflineBrain().review(task)).verdict == "reject"
