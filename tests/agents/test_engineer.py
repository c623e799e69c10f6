"""Editing like an engineer: search/replace edits against the parent, knob turns applied mechanically,
a cut-off answer given more room, and a pre-flight whose failure goes back in the same conversation
and is fixed before any run is recorded (fake LLM server, both wire formats; a real board and runner)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agents.arena import describe, open_arena
from agents.brains import make_brain
from agents.brains.base import Accounting, Brain, ImplementTask, RepairTask
from agents.runtime import AgentSpec, Context
from blackboard.client import Board
from blackboard.events import HypothesisProposed
from harness.settings import HarnessSettings
from roles.implementer import Implementer
from swarm.ground.settings import BrainSettings, Settings
from tests.agents.helpers import BASELINE
from tests.fakellm import FakeLLM, Reply, Request

Make = Callable[..., Brain]
LR_LINE = "MATRIX_LR = 0.03  # Muon learning rate for the 2-D weights of the blocks"


def edit(search: str, replace: str, note: str = "Done.") -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n{note}\n"


pytestmark = pytest.mark.usefixtures("keys")  # both providers' keys are set


@pytest.fixture(params=["anthropic", "openai"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def llm(kind: str, fake: FakeLLM, open_brain: Make, **overrides: object) -> Brain:
    url = fake.url if kind == "anthropic" else fake.openai_url
    return open_brain(BrainSettings(kind=kind, base_url=url, model="fake", **overrides), Accounting())  # type: ignore[arg-type]


def task(intent: dict) -> ImplementTask:
    return ImplementTask(program="p", contract="c", title="Faster LR", rationale="r", intent=intent, parent_code=BASELINE)


async def test_edits_apply_to_the_parent(kind: str, fake_llm: FakeLLM, open_brain: Make) -> None:
    fake_llm.on("implement", edit(LR_LINE, "MATRIX_LR = 0.05  # Muon learning rate, faster"))
    done = await llm(kind, fake_llm, open_brain).implement(task({"change": "a faster Muon learning rate"}))
    assert done.code == BASELINE.replace(LR_LINE, "MATRIX_LR = 0.05  # Muon learning rate, faster")
    assert done.notes == "Done." and "<<<<<<< SEARCH" in fake_llm.requests[0].text


async def test_an_edit_that_does_not_match_goes_back_with_why(kind: str, fake_llm: FakeLLM, open_brain: Make) -> None:
    fake_llm.on("implement", edit("MATRIX_LR = 0.3", "MATRIX_LR = 0.5"), edit(LR_LINE, "MATRIX_LR = 0.05"))
    done = await llm(kind, fake_llm, open_brain).implement(task({"change": "faster"}))
    assert "MATRIX_LR = 0.05\n" in done.code
    assert "edit 1: its SEARCH text is not in the train.py it edits" in fake_llm.requests[1].text


async def test_a_knob_idea_is_applied_mechanically_even_by_an_llm(kind: str, fake_llm: FakeLLM, open_brain: Make) -> None:
    done = await llm(kind, fake_llm, open_brain).implement(task({"knobs": {"MATRIX_LR": 0.05}}))
    assert "MATRIX_LR = 0.05  # Muon" in done.code and fake_llm.requests == []


async def test_a_cut_off_answer_gets_more_room(kind: str, fake_llm: FakeLLM, open_brain: Make) -> None:
    fake_llm.on("implement", Reply(text="<<<<<<< SEARCH\nMATRIX", stop="max_tokens"), edit(LR_LINE, "MATRIX_LR = 0.05"))
    done = await llm(kind, fake_llm, open_brain, max_tokens=3000).implement(task({"change": "faster"}))
    assert "MATRIX_LR = 0.05\n" in done.code
    first, second = fake_llm.requests
    limit = "max_tokens"  # both: a base_url makes the OpenAI brain send max_tokens
    assert (first.body[limit], second.body[limit]) == (3000, 6000)
    assert "room for 6000" in second.text and "briefly" not in second.text


async def test_a_repair_the_model_declines_ends_at_once(kind: str, fake_llm: FakeLLM, open_brain: Make) -> None:
    fake_llm.on("repair", "DECLINE: a width of 7 cannot be split into heads; the idea cannot work.")
    failed = RepairTask(**task({"change": "WIDTH 7"}).model_dump(), code=BASELINE, status="crash", reason="shape")
    assert await llm(kind, fake_llm, open_brain).repair(failed) is None
    assert len(fake_llm.requests) == 1


# --- the pre-flight, on a real board with the real runner ------------------------------------------


async def test_a_patch_that_fails_the_preflight_is_fixed_before_any_run(
    kind: str, board: Board, fake_llm: FakeLLM, tmp_path: Path
) -> None:  # fmt: skip
    broken = 'MATRIX_LR = "fast"  # a word, not a number'
    fixed = "MATRIX_LR = 0.05  # Muon learning rate, faster"

    def answer(request: Request) -> str:
        return edit(LR_LINE, broken) if request.attempt == 1 else edit(LR_LINE, fixed, "It must be a number.")

    fake_llm.answer_with(answer)
    harness = HarnessSettings(sim_seconds=0.1)
    info = describe("sim", "cpu", harness)
    await open_arena(board, info)
    assert (await board.propose(HypothesisProposed(by="i1", hypothesis="h1", arena=info.id, title="Faster LR",
                                                   intent={"change": "a faster Muon learning rate"}))).ok  # fmt: skip
    url = fake_llm.url if kind == "anthropic" else fake_llm.openai_url
    settings = Settings(dir=tmp_path, harness=harness, brain=BrainSettings(kind=kind, base_url=url, model="fake"))  # type: ignore[arg-type]
    brain = make_brain(settings.brain, Accounting())
    role = Implementer(Context(AgentSpec("m1", Implementer, "n1", "", tmp_path, device="cpu"), settings, board, brain,
                               board.heartbeat(10)))  # fmt: skip
    role.arena, role.program = info, "Implement."
    try:
        claim = await board.claim(["implement"], [info.id])
        assert claim is not None
        ready = await role._prepare(claim)
        assert ready is not None
        await role._run(ready)
    finally:
        await brain.aclose()
    first, second = fake_llm.requests
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user"]  # one conversation
    assert "failed the pre-flight" in second.text and "crash: synthetic:" in second.text and "MATRIX_LR" in second.text
    patches = (await board.query("SELECT code FROM patches WHERE hypothesis = 'h1'"))["rows"]
    assert patches == [[BASELINE.replace(LR_LINE, fixed)]]  # only the fixed version was submitted
    runs = (await board.query("SELECT status FROM runs WHERE hypothesis = 'h1'"))["rows"]
    assert runs == [["ok"]]  # and only it ran: no run of the failing version


@pytest.mark.slow
async def test_the_smoke_run_trains_one_step_on_the_cpu_and_reports_a_crash_with_its_traceback(tmp_path: Path) -> None:
    from harness import smoke, tiers

    tier = tiers.get("tiny")
    assert (await smoke.check(BASELINE, tier, runs_dir=tmp_path)).ok
    broken = await smoke.check(BASELINE.replace("HEADS = 4", "HEADS = 3"), tier, runs_dir=tmp_path)
    assert not broken.ok and broken.status == "crash" and "is invalid for input of size" in broken.reason
    assert "Traceback" in broken.report() and "line" in broken.report()
    guarded = await smoke.check(BASELINE.replace("import math\n", "import math\nimport os\n", 1), tier, runs_dir=tmp_path)
    assert guarded.status == "rejected" and "os" in guarded.reason
