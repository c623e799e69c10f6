"""The hybrid brain: the optimiser always, the LLM on a share of the trials."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import pytest

from agents import knobs
from agents.brains.base import Accounting, Brain, ImplementTask, ReviewTask
from swarm.ground.settings import BrainSettings
from agents.brains.base import Trial
from agents.brains.optimiser import N_STARTUP, Optimiser, history
from tests.agents.helpers import BASELINE, baseline_trial, context, warm_trials
from tests.fakellm import FakeLLM, code_answer, ideas_answer, verdict_answer

Make = Callable[..., Brain]
LLM_IDEA = {"title": "Untie the head LR", "rationale": "r", "intent": {"change": "separate LR for the head"}}


def hybrid(fake: FakeLLM, open_brain: Make, share: float) -> Brain:
    settings = BrainSettings(kind="hybrid", hybrid_share=share, base_url=fake.url, model="claude-sonnet-5-5")
    return open_brain(settings, seed=1)


async def test_the_llm_sees_the_optimisers_state(keys: dict, fake_llm: FakeLLM, open_brain: Make) -> None:
    fake_llm.on("ideas", ideas_answer([LLM_IDEA]))
    ctx = context([*warm_trials(), baseline_trial(1.7).model_copy(update={"patch": "p1", "title": "t1", "best": False,
                   "knobs": {**knobs.read(BASELINE), "DEPTH": 8}})])  # fmt: skip
    (idea,) = await hybrid(fake_llm, open_brain, share=1.0).ideas(ctx)
    assert idea.title == LLM_IDEA["title"] and idea.parent == "p0"
    text = fake_llm.requests[0].text
    assert "## The optimiser's view" in text and "The optimiser (TPE) would propose:\n- " in text
    assert "Most recent trials:" in text and "- ok 1.7000 DEPTH=8" in text
    assert "The search space (knob: kind, range searched around the best):\n- DEPTH: int, 1 .. 16" in text


async def test_the_llm_gets_no_slot_before_the_optimisers_warm_up(keys: dict, fake_llm: FakeLLM, open_brain: Make) -> None:
    fake_llm.on("ideas", ideas_answer([LLM_IDEA]))
    brain = hybrid(fake_llm, open_brain, share=1.0)
    cold = await brain.ideas(context(warm_trials(N_STARTUP - 1), n=2))
    assert all(" -> " in i.title for i in cold) and fake_llm.requests == []
    (warm,) = await brain.ideas(context(warm_trials(N_STARTUP), n=1))
    assert warm.title == LLM_IDEA["title"] and len(fake_llm.requests) == 1


def test_code_change_trials_stay_out_of_the_optimisers_study() -> None:
    base = knobs.read(BASELINE)
    trials = [*warm_trials(), Trial(patch="c1", title="SwiGLU", knobs={**base, "MATRIX_LR": 0.05}, status="ok",
                                    val_bpb=1.2, n=1, code_change=True)]  # fmt: skip
    ctx = context(trials)
    study = Optimiser(seed=0)._study(ctx, history(ctx))
    told = [t.params.get("MATRIX_LR") for t in study.trials]
    assert len(study.trials) == len(trials) - 1 and 1.2 not in [t.value for t in study.trials]
    assert all(v is None or abs(v - math.log(0.05)) > 1e-9 for v in told)


async def test_without_its_share_no_request_is_made(keys: dict, fake_llm: FakeLLM, open_brain: Make) -> None:
    ideas = await hybrid(fake_llm, open_brain, share=0.0).ideas(context(n=3))
    assert len(ideas) == 3 and all(set(i.intent) == {"knobs"} for i in ideas)
    assert fake_llm.requests == []


async def test_a_failing_llm_leaves_the_optimisers_ideas(
    keys: dict, fake_llm: FakeLLM, open_brain: Make, caplog: pytest.LogCaptureFixture
) -> None:
    fake_llm.on("ideas", "no idea", "still none")
    with caplog.at_level(logging.WARNING):
        ideas = await hybrid(fake_llm, open_brain, share=1.0).ideas(context(warm_trials(), n=2))
    assert len(ideas) == 2 and all(" -> " in i.title for i in ideas)
    assert len(fake_llm.requests) == 2 and "keeping the optimiser's" in caplog.text


async def test_knob_ideas_are_implemented_mechanically(keys: dict, fake_llm: FakeLLM, open_brain: Make) -> None:
    new_code = BASELINE.replace("F.relu(self.up(x)).square()", "F.gelu(self.up(x))")
    fake_llm.on("implement", code_answer(new_code))
    brain = hybrid(fake_llm, open_brain, share=0.5)
    knob_task = ImplementTask(program="", contract="", title="t", rationale="r", intent={"knobs": {"DEPTH": 6}},
                              parent_code=BASELINE)  # fmt: skip
    assert (await brain.implement(knob_task)).code == knobs.edit(BASELINE, {"DEPTH": 6})
    assert fake_llm.requests == []
    code_task = knob_task.model_copy(update={"intent": {"change": "GELU"}})
    assert (await brain.implement(code_task)).code == new_code and len(fake_llm.requests) == 1


async def test_a_static_problem_is_a_hard_reject_the_llm_is_not_paid_to_overrule(
    keys: dict, fake_llm: FakeLLM, open_brain: Make
) -> None:
    fake_llm.on("review", verdict_answer("approve", ["Faithful."]))
    task = ReviewTask(program="", contract="", title="t", rationale="r", parent_code=BASELINE, code=BASELINE, diff="",
                      problems=["line 4: imports os"])  # fmt: skip
    verdict = await hybrid(fake_llm, open_brain, share=0.5).review(task)
    assert verdict.verdict == "reject" and verdict.reasons == ["static check: line 4: imports os"]
    assert fake_llm.requests == []


async def test_a_spent_budget_leaves_the_optimisers_ideas(keys: dict, fake_llm: FakeLLM, open_brain: Make) -> None:
    settings = BrainSettings(kind="hybrid", hybrid_share=1.0, base_url=fake_llm.url, model="claude-sonnet-5-5")
    brain = open_brain(settings, Accounting(budget_left=lambda: 0.0))
    ideas = await brain.ideas(context(n=3))
    assert len({i.title for i in ideas}) == 3 and fake_llm.requests == []
