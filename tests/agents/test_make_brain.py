"""make_brain: the brain the settings name, and clear errors for a provider that cannot work."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.brains import make_brain
from agents.brains.base import Accounting, Brain, Usage
from agents.runtime import AgentSpec, async_run
from blackboard.client import Board
from agents.brains.hybrid import HybridBrain
from agents.brains.offline import OfflineBrain
from agents.brains.prices import price
from swarm.ground.errors import ConfigError
from swarm.ground.settings import BrainSettings, Settings
from swarm.natsserver import NatsServer
from tests.agents.helpers import context
from roles.ideator import Ideator
from tests.fakellm import FakeLLM, ideas_answer

IDEA = [{"title": "t", "rationale": "r", "intent": {"knobs": {"DEPTH": 6}}}]


def test_the_default_is_offline_and_needs_no_key(no_keys: None) -> None:
    brain = make_brain(Settings.load(env={}).brain, Accounting())
    assert isinstance(brain, OfflineBrain) and brain.name == "offline"


def test_keys_are_not_asked_for_when_no_provider_is_used(no_keys: None) -> None:
    assert make_brain(BrainSettings(kind="offline", model="gpt-6-sol", budget_usd=1.0), Accounting()).name == "offline"


@pytest.mark.parametrize("settings, message", [
    (BrainSettings(kind="anthropic"), "no credentials; set ANTHROPIC_API_KEY"),
    (BrainSettings(kind="openai"), "no credentials; set OPENAI_API_KEY"),
    (BrainSettings(kind="hybrid"), "no credentials; set ANTHROPIC_API_KEY"),
    (BrainSettings(kind="hybrid", hybrid_llm="openai"), "no credentials; set OPENAI_API_KEY"),
    (BrainSettings(kind="openai", base_url="http://127.0.0.1:8000/v1"), "brain.model is required with brain.base_url"),
])  # fmt: skip
def test_a_misconfigured_provider_is_a_config_error(no_keys: None, settings: BrainSettings, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_brain(settings, Accounting())


def test_a_budget_needs_a_price(keys: dict) -> None:
    with pytest.raises(ConfigError, match="no price known for model 'my-finetune'.*price_input_per_mtok"):
        make_brain(BrainSettings(kind="anthropic", model="my-finetune", budget_usd=5.0), Accounting())
    priced = BrainSettings(kind="anthropic", model="my-finetune", budget_usd=5.0, price_input_per_mtok=1.0,
                           price_output_per_mtok=2.0)  # fmt: skip
    assert make_brain(priced, Accounting()).name == "anthropic"


def test_prices() -> None:
    plain = BrainSettings()
    assert price("claude-haiku-4-5-20251001", plain) == price("claude-haiku-4-5", plain)
    assert price("claude-sonnet-5-5", plain).cost(1_000_000, 100_000) == pytest.approx(3.0)  # type: ignore[union-attr]
    assert price("my-finetune", plain) is None
    assert price("my-finetune", BrainSettings(price_input_per_mtok=1.0)) is None  # half a price is no price
    override = price("gpt-6-sol", BrainSettings(price_output_per_mtok=20.0))
    assert override is not None and (override.input_per_mtok, override.output_per_mtok) == (2.0, 20.0)


def test_hybrid_uses_the_provider_it_names(keys: dict) -> None:
    brain = make_brain(BrainSettings(kind="hybrid", hybrid_llm="openai", hybrid_share=0.5), Accounting())
    assert isinstance(brain, HybridBrain) and brain.llm.name == "openai" and brain.share == 0.5


def test_hybrid_share_is_a_fraction() -> None:
    with pytest.raises(ConfigError, match="hybrid_share"):
        Settings.load(env={}, overrides={"brain.hybrid_share": 1.5})


async def test_a_local_server_needs_no_key(no_keys: None, fake_llm: FakeLLM, open_brain: Callable[..., Brain]) -> None:
    fake_llm.on("ideas", ideas_answer(IDEA))
    brain = open_brain(BrainSettings(kind="openai", base_url=fake_llm.openai_url, model="qwen3:8b"))
    assert (await brain.ideas(context()))[0].title == "t"
    assert fake_llm.requests[0].headers["authorization"] == "Bearer unused"
    assert fake_llm.requests[0].body["max_tokens"] == 16_000  # what compatible servers know


# What each SDK's error says for a model its provider does not serve (the fake answers the real 404 body).
UNKNOWN = {"anthropic": "anthropic: HTTP 404 not_found_error: model: claude-nope",
           "openai": "openai: HTTP 404 model_not_found: The model `claude-nope` does not exist or you do not have access to it.",
           "hybrid": "anthropic: HTTP 404 not_found_error: model: claude-nope"}  # fmt: skip


def wrong_model(kind: str, fake: FakeLLM) -> BrainSettings:
    fake.models = {"fake-model"}
    return BrainSettings(kind=kind, base_url=fake.openai_url if kind == "openai" else fake.url, model="claude-nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["anthropic", "openai", "hybrid"])
async def test_a_wrong_model_name_fails_the_start_up_check_with_the_providers_message(
    kind: str, keys: dict, fake_llm: FakeLLM, open_brain: Callable[..., Brain]
) -> None:  # fmt: skip
    wrong = open_brain(wrong_model(kind, fake_llm))
    with pytest.raises(ConfigError, match=re.escape(f"brain {kind if kind != 'hybrid' else 'anthropic'}: model "
                                                    f"'claude-nope' cannot be used: {UNKNOWN[kind]}")):  # fmt: skip
        await wrong.check()
    assert len(fake_llm.requests) == 1  # asked once: a 404 is the provider's last word, not a reason to retry
    used: list[Usage] = []
    right = open_brain(wrong_model(kind, fake_llm).model_copy(update={"model": "fake-model"}),
                       Accounting(on_usage=used.append))  # fmt: skip
    fake_llm.push("ready")
    await right.check()  # the right name passes, and its few tokens are counted like any call's
    assert len(fake_llm.requests) == 2 and len(used) == 1 and used[0].output_tokens > 0


async def test_an_agent_with_a_wrong_model_name_stops_at_start_up_with_the_providers_message(
    keys: dict, fake_llm: FakeLLM, nats_server: NatsServer, board: Board, tmp_path: Path
) -> None:  # fmt: skip
    """With the board up, an ideator that started would ask for ideas again and again; it must not start."""
    settings = Settings(dir=tmp_path, brain=wrong_model("openai", fake_llm))
    spec = AgentSpec("i1", Ideator, "n1", nats_server.url, tmp_path)
    with pytest.raises(ConfigError, match=re.escape(UNKNOWN["openai"])):  # not an ideator asking again for ever
        await asyncio.wait_for(async_run(spec, settings), timeout=120)
    assert len(fake_llm.requests) == 1
    assert (await board.query("SELECT count(*) FROM agents"))["rows"] == [[0]]  # it never joined
