"""No text sent to a brain contains an audit score: the ideator, the implementer and the reviewer
build their prompts from what they read on a real board that holds audit scores of its bests, and
every request body the fake LLM server received is searched for them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.arena import ArenaInfo
from agents.brains import make_brain
from agents.brains.base import Accounting
from agents.runtime import AgentSpec, Context, Role
from blackboard.client import Board
from blackboard.events import AuditScored, HypothesisProposed, RunFinished, RunStarted, new_id
from roles.ideator import Ideator
from roles.implementer import Implementer
from roles.reviewer import Reviewer
from swarm.ground.settings import BrainSettings, Settings
from tests.agents.helpers import BASELINE, open_sim_arena
from tests.fakellm import FakeLLM, code_answer, ideas_answer, verdict_answer

ARENA = "sim/cpu-x86/0123456789ab"
AUDITS = {"p0": 7.31415926, "next": 6.27182818}  # scores no run produces: any trace of one is a leak
TRACES = ("7.314", "6.271", "7.31415926", "6.27182818")

pytestmark = pytest.mark.usefixtures("keys")  # both providers' keys are set


async def finish(board: Board, claim: object, patch: str, value: float, purpose: str) -> None:
    ids = dict(run=new_id("r"), patch=patch, arena=ARENA, work=claim.work, seed=0, purpose=purpose,  # type: ignore[attr-defined]
               tier="sim", device="cpu", node="n1")  # fmt: skip
    await board.publish(RunStarted(by="m1", **ids))
    await board.publish(RunFinished(by="m1", **ids, status="ok", val_bpb=value, steps=300, tokens=65536,
                                    training_seconds=2.0, params=123456, fingerprint="f" * 64, source_hash="s"))  # fmt: skip
    await board.release(claim.claim, done=True)  # type: ignore[attr-defined]


def role(cls: type[Role], agent: str, board: Board, settings: Settings, tmp_path: Path) -> Role:
    ctx = Context(AgentSpec(agent, cls, "n1", "cpu", tmp_path / agent), settings, board,
                  make_brain(settings.brain, Accounting()), board.heartbeat(10))  # fmt: skip
    made = cls(ctx)
    made.program = "Do the task."  # type: ignore[attr-defined]
    return made


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_no_request_to_a_brain_contains_an_audit_score(kind: str, board: Board, fake_llm: FakeLLM, tmp_path: Path) -> None:
    url = fake_llm.url if kind == "anthropic" else fake_llm.openai_url
    settings = Settings(dir=tmp_path, brain=BrainSettings(kind=kind, base_url=url, model="fake"))  # type: ignore[arg-type]
    await open_sim_arena(board, ARENA)
    await finish(board, await board.claim(["baseline"], [ARENA], wait=30), "p0", 1.60, "baseline")
    await board.publish(AuditScored(by="r1", patch="p0", arena=ARENA, status="ok", val_bpb=AUDITS["p0"]))

    # The ideator reads stats, the best, the trials, the desk and codes, and asks its brain for ideas.
    fake_llm.on("ideas", ideas_answer([{"title": "Add a bias to the logits", "rationale": "r",
                                        "intent": {"change": "a learned bias on the output logits"}}]))  # fmt: skip
    ideator = role(Ideator, "i1", board, settings, tmp_path)
    ideator.codes, ideator.refused = {}, []  # type: ignore[attr-defined]  # what run() sets up
    assert await ideator._propose({"arena": ARENA})  # type: ignore[attr-defined]

    # The implementer's claim carries the hypothesis, its parent (the audited best) and the patch's values.
    changed = BASELINE.replace("MATRIX_LR = 0.03 ", "MATRIX_LR = 0.031 ", 1)
    fake_llm.on("implement", code_answer(changed))
    implementer = role(Implementer, "m1", board, settings, tmp_path)
    implementer.arena = ArenaInfo(id=ARENA, tier="sim", hardware="cpu-x86", fingerprint="f" * 64, synthetic=True,  # type: ignore[attr-defined]
                                  baseline_patch="p0")  # fmt: skip
    claim = await board.claim(["implement"], [ARENA], wait=30)
    assert claim is not None
    ready = await implementer._prepare(claim)  # type: ignore[attr-defined]
    assert ready is not None, "the implementer's patch was not accepted"
    await finish(board, claim, ready.job.patch, 1.50, "explore")
    await board.publish(AuditScored(by="r1", patch=ready.job.patch, arena=ARENA, status="ok", val_bpb=AUDITS["next"]))

    # The reviewer's claim carries the candidate, its parent and the best's values.
    fake_llm.on("review", verdict_answer("approve", ["Faithful and small."]))
    reviewer = role(Reviewer, "v1", board, settings, tmp_path)
    review = await board.claim(["review"], [ARENA], wait=30)
    assert review is not None
    await reviewer._review(review)  # type: ignore[attr-defined]
    for made in (ideator, implementer, reviewer):
        await made.ctx.brain.aclose()  # type: ignore[union-attr]

    assert {r.task for r in fake_llm.requests} >= {"ideas", "implement", "review"}
    for request in fake_llm.requests:
        body = json.dumps(request.body)
        assert not any(trace in body for trace in TRACES), (request.task, [t for t in TRACES if t in body])
    shown = json.dumps(await board.query("SELECT val_bpb FROM audits ORDER BY seq"))
    assert "7.31415926" in shown and "6.27182818" in shown  # the scores are on the board, for people
