"""The ideator on a real board with an LLM brain (fake server, both wire formats): what it reads from
the board reaches the model, a lab note is written every N trials, and a near-duplicate idea is
refused with a pointer and sent back once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents import knobs
from agents.brains import make_brain, novelty
from agents.brains.base import Accounting, Idea
from agents.runtime import AgentSpec, Context
from blackboard.client import Board
from blackboard.events import HypothesisProposed, PatchSubmitted, RunFinished, RunStarted, new_id
from blackboard.rules import code_hash
from roles.ideator import Ideator
from swarm.ground.settings import AgentsSettings, BrainSettings, Settings
from tests.agents.helpers import BASELINE, context, open_sim_arena
from tests.fakellm import FakeLLM, ideas_answer

ARENA = "sim/cpu-x86/0123456789ab"
NOTE = "Helps: MATRIX_LR 0.04 (p1). Hurts: nothing yet. Untried: the MLP. Repeated failures: none."
SAME_KNOBS = {"title": "A faster learning rate", "rationale": "more steps of progress",
              "intent": {"knobs": {"MATRIX_LR": 0.04}}}  # fmt: skip
NEW = {"title": "Warmdown 0.5", "rationale": "a longer decay", "intent": {"knobs": {"WARMDOWN_FRACTION": 0.5}}}


pytestmark = pytest.mark.usefixtures("keys")  # both providers' keys are set


@pytest.fixture
async def board(board: Board) -> AsyncIterator[Board]:
    """The board with a sim arena: the baseline promoted, one knob trial run, one code idea queued."""
    await open_sim_arena(board, ARENA)
    await run(board, await board.claim(["baseline"], [ARENA]), "p0", 1.60)
    h1 = HypothesisProposed(by="i0", hypothesis="h1", arena=ARENA, title="MATRIX_LR 0.04",
                            rationale="the optimiser saw promise", intent={"knobs": {"MATRIX_LR": 0.04}})  # fmt: skip
    assert (await board.propose(h1)).ok
    claim = await board.claim(["implement"], [ARENA])
    code = knobs.edit(BASELINE, {"MATRIX_LR": 0.04})
    assert (await board.submit(PatchSubmitted(by="m1", patch="p1", arena=ARENA, hypothesis="h1", work=claim.work,
                                              parent="p0", code=code, diff="", code_hash=code_hash(code)))).ok  # fmt: skip
    await run(board, claim, "p1", 1.59)
    h2 = HypothesisProposed(by="i0", hypothesis="h2", arena=ARENA, parent="p0", title="SwiGLU MLP",
                            rationale="gated units", intent={"change": "ReLU^2 -> SwiGLU"})  # fmt: skip
    assert (await board.propose(h2)).ok
    yield board


async def run(board: Board, claim: object, patch: str, value: float) -> None:
    ids = dict(run=new_id("r"), patch=patch, arena=ARENA, work=claim.work, seed=0,  # type: ignore[attr-defined]
               purpose="baseline" if patch == "p0" else "explore", tier="sim", device="cpu", node="n1")  # fmt: skip
    await board.publish(RunStarted(by="m1", **ids))
    await board.publish(RunFinished(by="m1", **ids, status="ok", val_bpb=value, steps=321, tokens=65536,
                                    training_seconds=2.0, params=123456, fingerprint="f" * 64, source_hash="s"))  # fmt: skip
    await board.release(claim.claim, done=True)  # type: ignore[attr-defined]


def ideator(board: Board, brain_settings: BrainSettings, tmp_path: Path) -> Ideator:
    settings = Settings(dir=tmp_path, agents=AgentsSettings(note_every=2), brain=brain_settings)
    spec = AgentSpec(agent="i1", role=Ideator, node="n1", url="", dir=tmp_path)
    role = Ideator(Context(spec, settings, board, make_brain(brain_settings, Accounting()), board.heartbeat(10)))
    role.program, role.codes, role.refused = "Propose experiments.", {}, []
    return role


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_the_board_reaches_the_model_and_a_duplicate_goes_back_once(
    kind: str, board: Board, fake_llm: FakeLLM, tmp_path: Path
) -> None:  # fmt: skip
    answers = [ideas_answer([SAME_KNOBS]), ideas_answer([NEW])]
    fake_llm.on("note", NOTE)
    fake_llm.answer_with(lambda request: answers.pop(0))
    url = fake_llm.url if kind == "anthropic" else fake_llm.openai_url
    role = ideator(board, BrainSettings(kind=kind, base_url=url, model="fake"), tmp_path)  # type: ignore[arg-type]
    try:
        assert await role._propose({"arena": ARENA})
    finally:
        await role.ctx.brain.aclose()  # type: ignore[union-attr]
    tasks = [r.task for r in fake_llm.requests]
    assert tasks == ["note", "ideas", "ideas"]
    note, first, again = fake_llm.requests
    assert "p1 'MATRIX_LR 0.04': val_bpb 1.5900 over n=1" in note.text and "Helps:" in note.text
    for request in (first, again):
        assert NOTE in request.text and "- 'SwiGLU MLP' (queued)" in request.text
        assert "measured: steps 321, tokens 65,536, tok/s 32,768, params 123,456, train s 2.0" in request.text
        assert "why: the optimiser saw promise" in request.text and "synthetic: a known noisy function" in request.text
    assert "the same knob configuration as p1 ('MATRIX_LR 0.04')" in again.text
    assert "the same knob configuration" not in first.text
    titles = (await board.query("SELECT title FROM hypotheses ORDER BY proposed_at"))["rows"]
    assert titles == [["MATRIX_LR 0.04"], ["SwiGLU MLP"], ["Warmdown 0.5"]]  # the duplicate never reached the board
    notes = await board.ask("notes", {"arena": ARENA})
    assert [(n["note"], n["trials"]) for n in notes] == [(NOTE, 2)]
    assert "refused before queueing, the same knob configuration as p1" in role.refused[0]  # for its next contexts


async def test_the_offline_brain_writes_no_note(board: Board, tmp_path: Path) -> None:
    role = ideator(board, BrainSettings(kind="offline"), tmp_path)
    assert await role._propose({"arena": ARENA})
    assert await board.ask("notes", {"arena": ARENA}) == []
    assert len((await board.query("SELECT title FROM hypotheses"))["rows"]) == 3  # it did propose


def test_an_idea_in_other_words_is_refused_with_a_pointer_and_a_new_one_is_not() -> None:
    earlier = [novelty.Earlier("h7", "Replace ReLU squared by SwiGLU in the MLP", novelty.words_of(Idea(
        title="Replace ReLU squared by SwiGLU in the MLP", rationale="gated units train faster in small GPTs",
        intent={"change": "swap the MLP activation for SwiGLU"})), None)]  # fmt: skip
    reworded = Idea(title="SwiGLU instead of ReLU squared in the MLP", rationale="gated units train faster in small GPTs",
                    intent={"change": "use SwiGLU as the MLP activation"})  # fmt: skip
    other = Idea(title="Cosine warmdown", rationale="a smoother decay of the learning rate at the end",
                 intent={"change": "replace the linear warmdown with a cosine"})  # fmt: skip
    why = novelty.duplicate(reworded, context(), earlier)
    assert why is not None and why.startswith("reads like h7 ('Replace ReLU squared by SwiGLU in the MLP')")
    assert novelty.duplicate(other, context(), earlier) is None


async def test_the_offline_brains_ideas_in_one_template_are_new_when_their_configurations_are() -> None:
    """The offline brain words every idea alike; only the configuration it would run tells them apart."""
    from agents.brains.offline import OfflineBrain

    ctx = context().model_copy(update={"n": 8})
    ideas = await OfflineBrain(seed=3).ideas(ctx)
    assert len(ideas) == 8
    before: list[novelty.Earlier] = []
    for idea in ideas:
        assert novelty.duplicate(idea, ctx, before) is None, idea.title
        before.append(novelty.Earlier("(this round)", idea.title, novelty.words_of(idea),
                                      novelty.resulting_config(idea.intent, idea.parent, ctx)))  # fmt: skip
    why = novelty.duplicate(ideas[0], ctx, before)
    assert why is not None and why.startswith("the same knob configuration as (this round)")
