"""The offline brain's mechanical implement, its refusals, and the static review rules."""

from __future__ import annotations

import difflib

import pytest

from agents import knobs
from agents.brains.base import CannotDo, ImplementTask, RepairTask, ReviewTask
from agents.brains.offline import OfflineBrain
from tests.agents.helpers import BASELINE


def diff(parent: str, code: str) -> str:
    return "".join(difflib.unified_diff(parent.splitlines(True), code.splitlines(True), "a/train.py", "b/train.py"))


def task(intent: dict, parent: str = BASELINE) -> ImplementTask:
    return ImplementTask(program="", contract="", title="t", rationale="r", intent=intent, parent_code=parent)


def review_task(code: str, values: list[float] | None = None, best: list[float] | None = None,
                problems: list[str] | None = None, spread: float | None = 0.004) -> ReviewTask:  # fmt: skip
    return ReviewTask(program="", contract="", title="t", rationale="r", parent_code=BASELINE, code=code,
                      diff=diff(BASELINE, code), values=values or [], best_values=best or [], spread=spread,
                      problems=problems or [])  # fmt: skip


async def test_implement_edits_the_knobs_in_place() -> None:
    done = await OfflineBrain().implement(task({"knobs": {"MATRIX_LR": 0.045, "ADAM_BETAS": [0.9, 0.95]}}))
    assert done.code == knobs.edit(BASELINE, {"MATRIX_LR": 0.045, "ADAM_BETAS": (0.9, 0.95)})
    assert knobs.changes(BASELINE, done.code) == {"MATRIX_LR": 0.045, "ADAM_BETAS": (0.9, 0.95)}
    assert "MATRIX_LR = 0.045" in done.notes


@pytest.mark.parametrize("intent, why", [
    ({}, "names no knob values"),
    ({"change": "use SwiGLU in the MLP"}, "names no knob values"),
    ({"knobs": {"DEPTH": 6}, "change": "and add a layer norm"}, "asks for a code change in words"),
    ({"knobs": {"NOT_A_KNOB": 1}}, "no knob named NOT_A_KNOB"),
])  # fmt: skip
async def test_implement_refuses_what_it_cannot_do(intent: dict, why: str) -> None:
    with pytest.raises(CannotDo, match=why):
        await OfflineBrain().implement(task(intent))


async def test_repair_is_never_attempted() -> None:
    failed = RepairTask(**task({"knobs": {"DEPTH": 6}}).model_dump(), code=BASELINE, status="crash", reason="boom")
    assert await OfflineBrain().repair(failed) is None


async def test_review_approves_a_knob_change_with_reasons() -> None:
    verdict = await OfflineBrain().review(review_task(knobs.edit(BASELINE, {"DEPTH": 6})))
    assert verdict.verdict == "approve"
    assert any("changes only knob values (DEPTH = 6)" in r for r in verdict.reasons)


async def test_review_rejects_static_problems() -> None:
    verdict = await OfflineBrain().review(review_task(BASELINE, problems=["line 3: imports os"]))
    assert verdict.verdict == "reject" and verdict.reasons == ["static check: line 3: imports os"]


@pytest.mark.parametrize("line, what", [
    ('    text = open("/data/val.bin").read()', "reads or writes outside the model"),
    ("    torch.manual_seed(1234)", "sets seeds or random state"),
    ("    best_bpb = 0.0", "touches the evaluation"),
])  # fmt: skip
async def test_review_rejects_metric_gaming(line: str, what: str) -> None:
    code = BASELINE.replace("    model = GPT(", f"{line}\n    model = GPT(", 1)
    verdict = await OfflineBrain().review(review_task(code, values=[1.40], best=[1.60]))
    assert verdict.verdict == "reject"
    assert any(what in r and line.strip() in r for r in verdict.reasons), verdict.reasons


async def test_review_weighs_a_code_change_against_the_noise() -> None:
    code = BASELINE.replace("F.relu(self.up(x)).square()", "F.gelu(self.up(x))")
    within = await OfflineBrain().review(review_task(code, values=[1.598, 1.597], best=[1.600, 1.601]))
    assert within.verdict == "reject" and "within the noise (0.0080)" in within.reasons[0]
    beyond = await OfflineBrain().review(review_task(code, values=[1.560, 1.562], best=[1.600, 1.601]))
    assert beyond.verdict == "approve" and any("beyond the noise (0.0080)" in r for r in beyond.reasons)
    untried = await OfflineBrain().review(review_task(code))
    assert untried.verdict == "approve" and any("no result yet" in r for r in untried.reasons)


async def test_review_of_a_knob_change_ignores_a_small_gain() -> None:
    code = knobs.edit(BASELINE, {"SOFTCAP": 12.0})
    verdict = await OfflineBrain().review(review_task(code, values=[1.5995], best=[1.600]))
    assert verdict.verdict == "approve"
