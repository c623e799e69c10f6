"""The LLM brains through their real SDKs against the fake server, in both wire formats."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from agents import knobs
from agents.brains.base import Accounting, Brain, BrainError, CannotDo, ImplementTask, RepairTask, ReviewTask, Usage
from swarm.ground.settings import BrainSettings
from tests.agents.helpers import BASELINE, context
from tests.fakellm import FakeLLM, Reply, code_answer, ideas_answer, verdict_answer

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


async def test_review_shows_the_static_findings(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("review", verdict_answer("reject", ["It opens the validation file."]))
    task = ReviewTask(program="Be careful.", contract="", title="t", rationale="r", parent_code=BASELINE, code=NEW_CODE,
                      diff="--- a/train.py", values=[1.59], best_values=[1.60],
                      problems=["line 9: uses open()"])  # fmt: skip
    verdict = await brain(kind, fake_llm, []).review(task)
    assert verdict.verdict == "reject" and verdict.reasons == ["It opens the validation file."]
    (request,) = fake_llm.requests
    assert "- line 9: uses open()" in request.text and "verdict: reject" in request.text
    assert "candidate runs: 1.5900" in request.text


async def test_usage_and_cost_are_recorded(kind: str, fake_llm: FakeLLM, brain: Make, open_brain: Make) -> None:
    fake_llm.on("ideas", Reply(text=ideas_answer(IDEAS[:1]), input_tokens=12_000, output_tokens=3_000))
    usages: list[Usage] = []
    accounting = Accounting(on_usage=usages.append)
    await open_brain(settings(kind, fake_llm), accounting).ideas(context())
    expected = Usage(provider=kind, model=MODELS[kind], input_tokens=12_000, output_tokens=3_000, cost_usd=0.054)
    assert usages == [expected]
    assert accounting.spent_locally == pytest.approx(0.054)


async def test_a_price_override_prices_an_unknown_model(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("ideas", Reply(text=ideas_answer(IDEAS[:1]), input_tokens=1_000_000, output_tokens=0))
    usages: list[Usage] = []
    await brain(kind, fake_llm, usages, model="local-llama", price_input_per_mtok=0.5, price_output_per_mtok=1.0,
                budget_usd=10.0).ideas(context())  # fmt: skip
    assert usages[0].model == "local-llama" and usages[0].cost_usd == pytest.approx(0.5)


async def test_spent_budget_means_no_request_and_offline_answers(
    kind: str, fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture, brain: Make
) -> None:
    usages: list[Usage] = []
    spent = brain(kind, fake_llm, usages, left=0.0)
    ideas = await spent.ideas(context(n=2))
    assert len(ideas) == 2 and all(set(i.intent) == {"knobs"} and " -> " in i.title for i in ideas)
    done = await spent.implement(implement_task({"knobs": {"DEPTH": 6}}))
    assert done.code == knobs.edit(BASELINE, {"DEPTH": 6})
    with pytest.raises(CannotDo):
        await spent.implement(implement_task())
    task = ReviewTask(program="", contract="", title="t", rationale="r", parent_code=BASELINE, code=BASELINE, diff="",
                      problems=["line 1: imports os"])  # fmt: skip
    assert (await spent.review(task)).verdict == "reject"
    assert fake_llm.requests == [] and usages == []
    assert sum("budget is spent" in r.getMessage() for r in caplog.records) == 1  # said once


async def test_budget_is_asked_before_every_call(kind: str, fake_llm: FakeLLM, brain: Make, open_brain: Make) -> None:
    fake_llm.on("ideas", ideas_answer(IDEAS[:1]))
    left = [0.5]
    live = open_brain(settings(kind, fake_llm), Accounting(budget_left=lambda: left[0]))
    await live.ideas(context())
    left[0] = -0.01  # another agent spent the rest
    await live.ideas(context())
    assert len(fake_llm.requests) == 1


async def test_rate_limits_and_server_errors_are_retried(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.fail(429).fail(500).on("ideas", ideas_answer(IDEAS[:1]))
    usages: list[Usage] = []
    ideas = await brain(kind, fake_llm, usages).ideas(context())
    assert ideas[0].title == IDEAS[0]["title"] and len(fake_llm.requests) == 3 and len(usages) == 1


async def test_persistent_server_errors_become_a_brain_error(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.fail(500, times=3)
    with pytest.raises(BrainError, match=f"{kind}: InternalServerError"):
        await brain(kind, fake_llm, [], max_retries=2).ideas(context())
    assert len(fake_llm.requests) == 3


async def test_an_answer_cut_off_at_max_tokens_is_retried(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("implement", Reply(text="```python\nimport math\n", stop="max_tokens"), code_answer(NEW_CODE))
    done = await brain(kind, fake_llm, [], max_tokens=5000).implement(implement_task())
    assert done.code == NEW_CODE
    assert "cut off at the limit of 5000 tokens" in fake_llm.requests[1].text
    assert fake_llm.requests[0].body.get("max_tokens") == 5000


async def test_temperature_is_sent_only_when_set(kind: str, fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("ideas", ideas_answer(IDEAS[:1]))
    await brain(kind, fake_llm, [], temperature=0.3).ideas(context())
    assert fake_llm.requests[0].body["temperature"] == 0.3


async def test_openai_itself_gets_max_completion_tokens(
    fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch, brain: Make, open_brain: Make
) -> None:
    """Without brain.base_url the brain talks to OpenAI (here redirected by the SDK's own
    OPENAI_BASE_URL), whose reasoning models take only max_completion_tokens."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_llm.openai_url)
    fake_llm.on("ideas", ideas_answer(IDEAS[:1]))
    await open_brain(BrainSettings(kind="openai"), Accounting()).ideas(context())
    body = fake_llm.requests[0].body
    assert body["model"] == "gpt-6-sol" and body["max_completion_tokens"] == 16_000 and "max_tokens" not in body


async def test_thinking_blocks_are_not_part_of_the_answer(fake_llm: FakeLLM, brain: Make) -> None:
    fake_llm.on("implement", Reply(text=code_answer(NEW_CODE), thinking="```python\nnot this\n```"))
    done = await brain("anthropic", fake_llm, []).implement(implement_task())
    assert done.code == NEW_CODE


async def test_the_key_never_leaks(
    kind: str, keys: dict[str, str], fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture, brain: Make
) -> None:
    caplog.set_level(logging.DEBUG)  # the SDKs' own debug logging included
    key = keys[kind]
    fake_llm.on("ideas", "not json", ideas_answer(IDEAS[:1]))
    fake_llm.on("review", Reply(status=401, text=f"invalid api key {key}"))
    usages: list[Usage] = []
    live = brain(kind, fake_llm, usages)
    await live.ideas(context())
    task = ReviewTask(program="", contract="", title="t", rationale="r", parent_code=BASELINE, code=BASELINE, diff="")
    with pytest.raises(BrainError) as failure:
        await live.review(task)
    sent = fake_llm.requests[0].headers
    assert key in sent.get("x-api-key", "") + sent.get("authorization", "")  # the SDK did authenticate with it
    assert "AuthenticationError" in str(failure.value) and key not in str(failure.value)
    assert "[redacted]" in str(failure.value)
    assert key not in caplog.text and caplog.records
    assert usages and all(key not in u.model_dump_json() for u in usages)
