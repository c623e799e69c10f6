"""The reviewer on a real board with an LLM brain (fake server, both wire formats): it sends the model the
parent and the run metrics of the candidate and its parent, and a static gaming finding stays a
rejection even though the model would approve."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents import knobs
from agents.brains import make_brain
from agents.brains.base import Accounting
from agents.runtime import AgentSpec, Context
from blackboard.client import Board
from blackboard.events import HypothesisProposed, PatchSubmitted, RunFinished, RunStarted, new_id
from blackboard.rules import code_hash
from roles.common import unified_diff
from roles.reviewer import Reviewer
from swarm.ground.settings import BrainSettings, Settings
from tests.agents.helpers import BASELINE, open_sim_arena
from tests.fakellm import FakeLLM, verdict_answer

ARENA = "sim/cpu-x86/0123456789ab"
CHEAT = BASELINE.replace("import math\n", "import math\nVAL = open('/data/val.bin', 'rb').read()\n", 1)


pytestmark = pytest.mark.usefixtures("keys")  # both providers' keys are set


@pytest.fixture
async def board(board: Board) -> AsyncIterator[Board]:
    """The board with a sim arena whose baseline ran."""
    await open_sim_arena(board, ARENA)
    await run(board, await board.claim(["baseline"], [ARENA], wait=30), "p0", 1.60, steps=300)
    yield board


async def run(board: Board, claim: object, patch: str, value: float, steps: int) -> None:
    ids = dict(run=new_id("r"), patch=patch, arena=ARENA, work=claim.work, seed=0,  # type: ignore[attr-defined]
               purpose="baseline" if patch == "p0" else "explore", tier="sim", device="cpu", node="n1")  # fmt: skip
    await board.publish(RunStarted(by="m1", **ids))
    await board.publish(RunFinished(by="m1", **ids, status="ok", val_bpb=value, steps=steps, tokens=65536,
                                    training_seconds=2.0, params=123456, fingerprint="f" * 64, source_hash="s"))  # fmt: skip
    await board.release(claim.claim, done=True)  # type: ignore[attr-defined]


async def candidate(board: Board, hypothesis: str, patch: str, title: str, code: str, value: float) -> None:
    """An idea implemented and run once, better than the best: a candidate waiting for review."""
    assert (await board.propose(HypothesisProposed(by="i1", hypothesis=hypothesis, arena=ARENA, parent="p0", title=title,
                                                   intent={"change": title}))).ok  # fmt: skip
    claim = await board.claim(["implement"], [ARENA], wait=30)
    assert (await board.submit(PatchSubmitted(by="m1", patch=patch, arena=ARENA, hypothesis=hypothesis, work=claim.work,
                                              parent="p0", code=code, diff=unified_diff(BASELINE, code),
                                              code_hash=code_hash(code)))).ok  # fmt: skip
    await run(board, claim, patch, value, steps=321)


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_the_reviewer_sends_the_evidence_and_a_gaming_finding_stays_a_rejection(
    kind: str, board: Board, fake_llm: FakeLLM, tmp_path: Path
) -> None:  # fmt: skip
    fake_llm.on("review", verdict_answer("approve", ["Faithful and small."]))
    url = fake_llm.url if kind == "anthropic" else fake_llm.openai_url
    settings = Settings(dir=tmp_path, brain=BrainSettings(kind=kind, base_url=url, model="fake"))  # type: ignore[arg-type]
    role = Reviewer(Context(AgentSpec("v1", Reviewer, "n1", "", tmp_path), settings, board,
                            make_brain(settings.brain, Accounting()), board.heartbeat(10)))  # fmt: skip
    role.program = "Review."
    try:
        for hypothesis, patch, title, code in [("h1", "p1", "Peek at the data", CHEAT),
                                               ("h2", "p2", "A faster rate", knobs.edit(BASELINE, {"MATRIX_LR": 0.05}))]:  # fmt: skip
            await candidate(board, hypothesis, patch, title, code, 1.50)
            claim = await board.claim(["review"], ["*"], wait=30)
            assert claim is not None and claim.patch is not None and claim.patch["id"] == patch
            await role._review(claim)
    finally:
        await role.ctx.brain.aclose()  # type: ignore[union-attr]
    verdicts = dict((p, (v, r)) for p, v, r in (await board.query("SELECT patch, verdict, reasons FROM reviews"))["rows"])
    assert verdicts["p1"][0] == "reject" and any("open" in reason for reason in verdicts["p1"][1])
    assert verdicts["p2"] == ("approve", ["Faithful and small."])
    (request,) = fake_llm.requests  # the model was asked about the clean patch only
    assert "title: A faster rate" in request.text and "## The parent train.py" in request.text
    assert "candidate: measured: steps 321, tokens 65,536, tok/s 32,768, params 123,456, train s 2.0" in request.text
    assert "parent: measured: steps 300" in request.text
