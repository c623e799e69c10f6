"""The ideator's desk as an LLM receives it: every item of a trial, the tier, the contract, what is queued,
the lab note, within the token budget even on a long history; both wire formats."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agents import knobs
from agents.brains.base import Accounting, Brain, IdeaContext, Trial
from agents.brains.desk import tier_block
from harness import tiers
from roles.common import contract_text
from swarm.ground.settings import BrainSettings
from tests.agents.helpers import BASELINE, baseline_trial
from tests.fakellm import FakeLLM, ideas_answer

Make = Callable[..., Brain]
ARENA = "tiny/cpu-x86/0123456789ab"
GELU = "-        return self.down(F.relu(self.up(x)).square())\n+        return self.down(F.gelu(self.up(x)))\n"
NOTE = "Helps: MATRIX_LR near 0.04 (p3). Hurts: DEPTH 8 runs out of steps. Untried: SwiGLU."
IDEA = [{"title": "WARMDOWN 0.5", "rationale": "r", "intent": {"knobs": {"WARMDOWN_FRACTION": 0.5}}}]
METRICS = {"steps": 120.0, "tokens": 262144.0, "tokens_per_s": 5461.3, "params": 3.2e6, "peak_memory_mb": 812.0,
           "training_seconds": 48.0}  # fmt: skip


pytestmark = pytest.mark.usefixtures("keys")  # both providers' keys are set


@pytest.fixture(params=["anthropic", "openai"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def history(count: int) -> list[Trial]:
    """`count` trials of every kind: knob turns, code changes, failures, rejections, replications."""
    base = knobs.read(BASELINE)
    out = [baseline_trial(1.6).model_copy(update={"metrics": METRICS, "std": 0.001})]
    for i in range(1, count):
        lr = round(0.02 + 0.0001 * i, 5)
        trial = Trial(patch=f"p{i}", title=f"MATRIX_LR {lr}", knobs={**base, "MATRIX_LR": lr}, status="ok",
                      val_bpb=1.61 + 0.0001 * (i % 37), n=1, rationale=f"probe the learning rate around {lr}",
                      metrics=METRICS)  # fmt: skip
        match i % 10:
            case 3:
                trial = trial.model_copy(update={"status": "crash", "val_bpb": None, "n": 0, "metrics": {"steps": 7.0},
                                                 "reason": f"RuntimeError: shape mismatch {i % 3}"})  # fmt: skip
            case 5:
                trial = trial.model_copy(update={"title": f"GELU {i}", "code_change": True, "diff": GELU, "n": 3,
                                                 "std": 0.0012, "outcome": "not_better",
                                                 "explanation": "mean 1.6120 does not beat 1.6000"})  # fmt: skip
            case 7:
                trial = trial.model_copy(update={"rejected": ["It reads the validation split."]})
            case 9:
                trial = trial.model_copy(update={"n": 3, "std": 0.0009, "outcome": "promoted"})
        out.append(trial)
    return out


def desk_context(count: int) -> IdeaContext:
    tier = tiers.get("tiny")
    return IdeaContext(arena=ARENA, tier="tiny", program="Propose experiments.", best_patch="p0", best_code=BASELINE,
                       best_mean=1.6, spread=0.001, trials=history(count), contract=contract_text(),
                       tier_info=tier_block(tier, ARENA), note=NOTE,
                       pending=["'SwiGLU MLP' (being implemented)", "'DEPTH 5' (queued)"],
                       refused=["'GELU again': the same code was already run (duplicate of p5)"],
                       context_len=tier.context_len)  # fmt: skip


async def test_the_ideas_prompt_holds_every_item_of_the_desk(kind: str, fake_llm: FakeLLM, open_brain: Make) -> None:
    fake_llm.on("ideas", ideas_answer(IDEA))
    url = fake_llm.url if kind == "anthropic" else fake_llm.openai_url
    brain = open_brain(BrainSettings(kind=kind, base_url=url, model="fake"), Accounting())  # type: ignore[arg-type]
    await brain.ideas(desk_context(20))
    (request,) = fake_llm.requests
    text = request.text
    assert "train(run)" in request.system and "Propose experiments." in request.system  # the contract
    assert "262,144 training tokens (a token budget" in text and "hard limits: training process 300 s" in text
    assert "hardware class: cpu-x86" in text and "65,536 validation tokens at sequence length 128" in text
    assert NOTE in text
    assert "- 'SwiGLU MLP' (being implemented)" in text and "- 'DEPTH 5' (queued)" in text
    assert "(duplicate of p5)" in text
    assert "p0 [best] 'baseline': val_bpb 1.6000 +- 0.0010 over n=3, the current best" in text
    assert "'GELU 5': val_bpb 1.6105 +- 0.0012 over n=3, replicated, not better (mean 1.6120 does not beat" in text
    assert "diff: -        return self.down(F.relu(self.up(x)).square()) | +        return self.down(F.gelu" in text
    assert "p3 'MATRIX_LR 0.0203': failed (crash): RuntimeError: shape mismatch 0; knobs vs best: MATRIX_LR=0.0203" in text
    assert "measured: steps 7" in text
    assert "rejected in review: It reads the validation split." in text
    assert "p9 'MATRIX_LR 0.0209': val_bpb 1.6109 +- 0.0009 over n=3, promoted, since superseded" in text
    assert ("measured: steps 120, tokens 262,144, tok/s 5,461, params 3,200,000, peak MB 812, train s 48.0; "
            "why: probe the learning rate around 0.0201") in text
    assert "summarised" not in text  # 20 trials fit whole


async def test_a_long_history_is_summarised_within_the_budget(kind: str, fake_llm: FakeLLM, open_brain: Make) -> None:
    fake_llm.on("ideas", ideas_answer(IDEA))
    url = fake_llm.url if kind == "anthropic" else fake_llm.openai_url
    brain = open_brain(BrainSettings(kind=kind, base_url=url, model="fake"), Accounting())  # type: ignore[arg-type]
    context = desk_context(500)
    await brain.ideas(context)
    (request,) = fake_llm.requests
    text = request.text
    size = len(request.system) + sum(len(m["content"]) for m in request.messages)
    assert size / 4 <= context.budget_tokens
    assert size / 4 > context.budget_tokens * 0.8  # the budget is used, not wasted
    summary = text[text.index("older or less informative trials summarised"):].split("\n", 1)[0]
    assert "ran ok, val_bpb" in summary and "failed (crash" in summary and "RuntimeError: shape mismatch" in summary
    assert "rejected in review" in summary and "code changes" in summary and "MATRIX_LR (x" in summary
    listed = [line for line in text.splitlines() if line.startswith("- p")]
    assert listed[0].startswith("- p0 [best]") and listed[-1].startswith("- p499 ")  # the best and the latest
    shown = int(text.split(" older or less informative")[0].rsplit("(", 1)[1])
    assert shown + len(listed) == 500  # every trial is listed or counted in the summary
    assert NOTE in text and "train(run)" in request.system and "- 'DEPTH 5' (queued)" in text
