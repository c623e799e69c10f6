"""Repair that remembers: a failed run is repaired with the facts of its kind of failure, in one
conversation per hypothesis; a hypothesis whose implementation keeps failing is given up with its
reason and not queued again (fake LLM server, both wire formats; a real board and runner)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.arena import describe, open_arena
from agents.brains import failures, make_brain
from agents.brains.base import Accounting
from agents.runtime import AgentSpec, Context
from blackboard.client import Board
from blackboard.events import HypothesisProposed
from harness import tiers
from harness.runner import Progress, RunResult
from harness.settings import HarnessSettings
from roles.implementer import Implementer
from swarm.ground.settings import AgentsSettings, BrainSettings, Settings
from tests.agents.helpers import BASELINE
from tests.fakellm import FakeLLM, Request

LR_LINE = "MATRIX_LR = 0.03  # Muon learning rate for the 2-D weights of the blocks"


def edit(search: str, replace: str) -> str:
    return edits((search, replace))


def edits(*pairs: tuple[str, str]) -> str:
    """An implementer's answer: SEARCH/REPLACE blocks, then a note."""
    return "".join(f"<<<<<<< SEARCH\n{s.rstrip()}\n=======\n{r.rstrip()}\n>>>>>>> REPLACE\n" for s, r in pairs) + "Done.\n"


pytestmark = pytest.mark.usefixtures("keys")  # both providers' keys are set


async def implementer(board: Board, fake: FakeLLM, kind: str, tmp_path: Path, tier: str = "sim",
                      harness: HarnessSettings = HarnessSettings(sim_seconds=0.1), **agents: int) -> Implementer:  # fmt: skip
    """An implementer of an arena (the sim's by default) on the board, with one approved code idea waiting."""
    info = describe(tier, "cpu", harness)
    await open_arena(board, info)
    assert (await board.propose(HypothesisProposed(by="i1", hypothesis="h1", arena=info.id, title="Faster LR",
                                                   intent={"change": "a much faster learning rate"}))).ok  # fmt: skip
    url = fake.url if kind == "anthropic" else fake.openai_url
    settings = Settings(dir=tmp_path, harness=harness, agents=AgentsSettings(**agents),
                        brain=BrainSettings(kind=kind, base_url=url, model="fake"))  # type: ignore[arg-type]
    mine = Board(board.bus, agent="m1", retry_seconds=20)  # the implementer's own client: its claims are m1's
    role = Implementer(Context(AgentSpec("m1", Implementer, "n1", "", tmp_path, device="cpu"), settings, mine,
                               make_brain(settings.brain, Accounting()), mine.heartbeat(10)))  # fmt: skip
    role.arena, role.program = info, "Implement."
    return role


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_a_diverged_run_is_repaired_in_one_conversation(
    kind: str, board: Board, fake_llm: FakeLLM, tmp_path: Path
) -> None:  # fmt: skip
    answers = {"implement": edit(LR_LINE, "MATRIX_LR = 3000.0"),
               "repair": [edit("MATRIX_LR = 3000.0", "MATRIX_LR = 300.0"), edit("MATRIX_LR = 300.0", "MATRIX_LR = 0.05")]}  # fmt: skip

    def answer(request: Request) -> str:
        return answers["implement"] if request.task == "implement" else answers["repair"].pop(0)

    fake_llm.answer_with(answer)
    role = await implementer(board, fake_llm, kind, tmp_path)
    try:
        claim = await role.ctx.board.claim(["implement"], [role.arena.id], wait=30)
        ready = await role._prepare(claim)  # type: ignore[arg-type]
        assert ready is not None
        await role._run(ready)
    finally:
        await role.ctx.brain.aclose()  # type: ignore[union-attr]
    first, second = fake_llm.for_task("repair")
    assert "status: diverged" in first.text and "MATRIX_LR = 3000.0 is far outside" in first.text
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user"]  # the first attempt is visible
    assert second.messages[0]["content"] == first.text and "MATRIX_LR = 300.0" in second.messages[1]["content"]
    assert "Attempt 2" in second.text and "your last repair" in second.text and "MATRIX_LR = 300.0 is far" in second.text
    runs = (await board.query("SELECT status FROM runs WHERE hypothesis = 'h1' ORDER BY updated_at"))["rows"]
    assert runs == [["diverged"], ["diverged"], ["ok"]]


# Real runs on the tiny tier, at a shape that trains its token budget in seconds. The smoke
# pre-flight trains one step, so what fails from the second step on fails only in the real run.
# On the CPU the worker's address-space cap (the run's memory cap) stops the big allocation inside
# the process, which reports oom with its peak memory; the runner's RSS polling is the GPU's guard.
STEP = "        loss.backward()\n"
SHRINK = {"DEPTH": "1", "WIDTH": "32", "HEADS": "2", "BATCH_SIZE": "128", "LOG_EVERY": "1"}  # LOG_EVERY: a NaN seen at once
HOG = "        if step == 1:\n            kept = torch.ones(2**31)  # every activation of the run kept: 8 GiB\n"
NAN = "        if step >= 1:\n            loss = loss * float('nan')  # a loss scale that overflowed\n"
CAP_MB = 4000


def knob_line(name: str) -> str:
    return next(line for line in BASELINE.splitlines() if line.startswith(f"{name} = "))


@pytest.mark.slow
@pytest.mark.timeout(900)  # three pre-flights and three real runs: about a minute alone, minutes on a busy machine
async def test_a_real_out_of_memory_run_and_a_real_diverged_run_are_repaired_in_one_conversation(
    board: Board, fake_llm: FakeLLM, tmp_path: Path
) -> None:  # fmt: skip
    shrink = [(knob_line(k), f"{k} = {v}") for k, v in SHRINK.items()]
    answers = [edits(*shrink, (STEP, HOG + STEP)),  # the implementation: over the memory cap at step 1
               edits((HOG, NAN)),  # the first repair: within the cap, but the loss turns NaN
               edits((NAN, ""))]  # the second repair: runs
    fake_llm.answer_with(lambda request: answers.pop(0))
    harness = HarnessSettings(memory_cap_mb=CAP_MB)  # the tiny tier's data in the user's cache, prepared once
    role = await implementer(board, fake_llm, "anthropic", tmp_path, tier="tiny", harness=harness)
    try:
        async with role.ctx.heartbeat:  # real runs outlast the claim's lease: held as the agent holds it
            claim = await role.ctx.board.claim(["implement"], [role.arena.id], wait=30)
            assert claim is not None
            role.ctx.heartbeat.hold(claim.claim)
            ready = await role._prepare(claim)
            assert ready is not None and "torch.ones(2**31)" in ready.job.code  # it passed the one-step pre-flight
            await role._run(ready)
    finally:
        await role.ctx.brain.aclose()  # type: ignore[union-attr]
    runs = (await board.query("SELECT status, reason, peak_memory_mb, steps FROM runs WHERE hypothesis = 'h1' "
                              "ORDER BY updated_at"))["rows"]  # fmt: skip
    assert [status for status, *_ in runs] == ["oom", "diverged", "ok"], runs
    (_, oom_reason, peak, _), (_, nan_reason, _, _) = runs[0], runs[1]
    assert "can't allocate memory" in oom_reason and peak is not None and 0 < peak < CAP_MB
    assert "nan" in nan_reason
    first, second = fake_llm.for_task("repair")
    assert "status: oom" in first.text and f"peak memory: {peak:.0f} MB; the memory cap: {CAP_MB} MB" in first.text
    assert "torch.ones(2**31)" in first.text and "can't allocate memory" in first.text  # the code and the traceback
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user"]  # the out-of-memory attempt is visible
    assert second.messages[0]["content"] == first.text and "float('nan')" in second.messages[1]["content"]
    assert "status: diverged" in second.text and "loss curve (step: loss): 0: " in second.text and "nan" in second.text


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_a_hypothesis_that_keeps_failing_is_given_up_with_its_reason(
    kind: str, board: Board, fake_llm: FakeLLM, tmp_path: Path
) -> None:  # fmt: skip
    fake_llm.on("implement", "I would rather talk about it.")
    role = await implementer(board, fake_llm, kind, tmp_path, implement_failures=2)
    try:
        for _ in range(2):
            claim = await role.ctx.board.claim(["implement"], [role.arena.id], wait=30)
            assert claim is not None and await role._prepare(claim) is None
    finally:
        await role.ctx.brain.aclose()  # type: ignore[union-attr]
    assert await board.claim(["implement"], [role.arena.id], wait=1) is None  # not queued again
    reasons = (await board.query("SELECT done, reason FROM claims ORDER BY granted_at"))["rows"]
    assert [done for done, _ in reasons] == [False, True]
    assert reasons[-1][1].startswith("given up after 2 failed implementations: ") and "no usable answer" in reasons[-1][1]


def test_an_out_of_memory_run_is_described_with_its_memory_cap_steps_curve_and_whole_traceback(tmp_path: Path) -> None:
    frames = "".join(f'  File "train.py", line {i}, in f{i}\n    f{i + 1}()\n' for i in range(60))
    (tmp_path / "train.log").write_text("step 1\nTraceback (most recent call last):\n" + frames +
                                        "torch.OutOfMemoryError: CUDA out of memory\n")  # fmt: skip
    result = RunResult(status="oom", reason="out of memory", steps=42, peak_memory_mb=2100.0, training_seconds=31.5,
                       tier="tiny", device="cpu", hardware="cpu", seed=0, fingerprint="f", source_hash="s",
                       run_dir=str(tmp_path), log_tail="(the last lines only)")  # fmt: skip
    curve = [Progress(step, step * 100, 5.0 - step / 10, step * 0.7, 262144, None) for step in range(1, 43)]
    text = failures.facts(result, curve, tiers.get("tiny"), 2048)
    assert "status: oom" in text and "steps reached: 42" in text
    assert "peak memory: 2100 MB; the memory cap: 2048 MB" in text
    assert "training time: 31.5 s; the training process's hard limit: 300 s" in text
    assert "loss curve (step: loss): 1: 4.9, " in text and "42: 0.8" in text
    assert "in f0\n" in text and "torch.OutOfMemoryError: CUDA out of memory" in text  # the whole traceback
