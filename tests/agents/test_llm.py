"""The LLM brains through their real SDKs against the fake server, in both wire formats."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agents import knobs
from agents.brains.base import Accounting, Brain, BrainError, ImplementTask, RepairTask, ReviewTask, Usage
from swarm.ground.settings import BrainSettings
from tests.agents.helpers import BASELINE, context
from tests.fakellm import FakeLLM, code_answer, ideas_answer, verdict_answer

Make = Callable[..., Brain]
MODELS = {"anthropic": "claude-sonnet-5-5", "openai": "gpt-6-sol"}  # both $2 in, $10 out per million tokens
IDEAS = [
    {"title": "Warmdown 0.4 -> 0.5", "rationale": "longer decay", "intent": {"knobs": {"WARMDOWN_FRACTION": 0.5}}},
    {"title": "SwiGLU MLP", "rationale": "gated units", "intent": {"change": "replace ReLU^2 with SwiGLU"}},
]
NEW_CODE = knobs.edit(BASELINE, {"DEPTH": 6}).replace("F.relu(self.up(x)).square()", "F.gelu(self.up(x))")


@pytest.fixture(autouse=True)
def _keys(keys: dict[str, str]) -> None:
    """Every test here runs with both keys set (test_the_key_never_leaks looks for them)."""


@pytest.fixture(params=["anthropic", "openai"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def settings(kind: str, fake: FakeLLM, **overrides: object) -> BrainSettings:
    url = fake.url if kind == "anthropic" else fake.openai_url
    fields = {"kind": kind, "base_url": url, "model": MODELS[kind], **overrides}
    return BrainSettings(**fields)  # type: ignore[arg-type]


@pytest.fixture
def brain(open_brain: Make) -> Make:
    """A brain of `kind` talking to the fake server, reporting usage into `usages`."""

    def make(kind: str, fake: FakeLLM, usages: list[Usage], left: float | None = None, **overrides: object) -> Brain:
        accounting = Accounting(on_usage=usages.append, budget_left=lambda: left)
        return open_brain(settings(kind, fake, **overrides), accounting)

    return make


def implement_task(intent: dict | None = None) -> ImplementTask:
    return ImplementTask(program="Implement faithfully.", contract="CONTRACT: train(run) only.", title="GELU, deeper",
                         rationale="r", intent=intent or {"change": "GELU in the MLP", "knobs": {"DEPTH": 6}},
                         parent_code=BASELINE)  # fmt: skip


async def test_ideas_come_from_the_model(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("ideas", ideas_answer(IDEAS))
    usages: list[Usage] = []
    ideas = await brain(kind, fake_llm, usages).ideas(context(n=2))
    assert [(i.title, i.intent, i.parent) for i in ideas] == [(d["title"], d["intent"], "p0") for d in IDEAS]
    (request,) = fake_llm.requests
    assert request.format == kind and request.task == "ideas" and request.body["model"] == MODELS[kind]
    assert request.system == "Propose experiments." and "MATRIX_LR = 0.03" in request.text
    assert "p0 [best] 'baseline': val_bpb 1.6000 over n=3, the current best" in request.text and "exactly 2 objects" in request.text
    assert "temperature" not in request.body  # current models refuse anything but their default
    assert len(usages) == 1 and usages[0].provider == kind


async def test_implement_returns_the_whole_new_file(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("implement", code_answer(NEW_CODE, "Deeper, and GELU."))
    done = await brain(kind, fake_llm, []).implement(implement_task())
    assert done.code == NEW_CODE and done.notes == "Deeper, and GELU."
    (request,) = fake_llm.requests
    assert "CONTRACT: train(run) only." in request.system and "Implement faithfully." in request.system
    assert BASELINE.splitlines()[20] in request.text and '"change": "GELU in the MLP"' in request.text


async def test_a_malformed_answer_is_retried_with_the_error(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("implement", "Here is the change:\n```python\nDEPTH = (6\n```", code_answer(NEW_CODE))
    usages: list[Usage] = []
    done = await brain(kind, fake_llm, usages).implement(implement_task())
    assert done.code == NEW_CODE
    first, second = fake_llm.requests
    assert (first.attempt, second.attempt) == (1, 2)
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user"]
    assert "DEPTH = (6" in second.messages[1]["content"] and "does not parse" in second.messages[2]["content"]
    assert len(usages) == 2  # the wasted answer is paid for too


async def test_two_malformed_answers_fail_clearly(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("review", "I approve, it looks fine.", '```json\n{"verdict": "maybe", "reasons": ["?"]}\n```')
    task = ReviewTask(program="", contract="", title="t", rationale="r", parent_code=BASELINE, code=NEW_CODE, diff="")
    with pytest.raises(BrainError, match=f"{kind} .*no usable answer after 2 attempts: verdict must be"):
        await brain(kind, fake_llm, []).review(task)
    assert len(fake_llm.requests) == 2


async def test_repair_sends_the_failure_and_returns_the_fix(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("repair", code_answer(NEW_CODE, "HEADS must divide WIDTH."))
    broken = NEW_CODE.replace("HEADS = 4", "HEADS = 3")
    task = RepairTask(**implement_task().model_dump(), code=broken, status="crash", reason="exit code 1",
                      log_tail="RuntimeError: shape '[16, 128, 3, 3, 42]' is invalid", attempt=1)  # fmt: skip
    fixed = await brain(kind, fake_llm, []).repair(task)
    assert fixed is not None and fixed.code == NEW_CODE
    (request,) = fake_llm.requests
    assert request.task == "repair" and "status: crash" in request.text and "is invalid" in request.text
    assert "HEADS = 3" in request.text


async def test_review_shows_the_evidence(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("review", verdict_answer("reject", ["Fewer steps for no gain."]))
    task = ReviewTask(program="Be careful.", contract="", title="t", rationale="r", parent_code=BASELINE, code=NEW_CODE,
                      diff="--- a/train.py", values=[1.59], best_values=[1.60],
                      metrics={"steps": 90.0, "peak_memory_mb": 900.0}, parent_metrics={"steps": 120.0},
                      similar=["p7 'GELU MLP' (82% alike): val_bpb 1.6100 over n=3, not_better"])  # fmt: skip
    verdict = await brain(kind, fake_llm, []).review(task)
    assert verdict.verdict == "reject" and verdict.reasons == ["Fewer steps for no gain."]
    (request,) = fake_llm.requests
    assert "## The parent train.py" in request.text and BASELINE.splitlines()[20] in request.text
    assert "candidate: measured: steps 90, peak MB 900\nparent: measured: steps 120" in request.text
    assert "- p7 'GELU MLP' (82% alike)" in request.text and "## What the static rules conclude" in request.text


async def test_a_static_finding_stays_a_rejection(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("review", verdict_answer("approve", ["Looks fine to me."]))
    task = ReviewTask(program="", contract="", title="t", rationale="r", parent_code=BASELINE, code=NEW_CODE,
                      diff="", problems=["line 9: uses open()"])  # fmt: skip
    verdict = await brain(kind, fake_llm, []).review(task)
    assert verdict.verdict == "reject" and verdict.reasons == ["static check: line 9: uses open()"]
