"""Fixtures for the brain tests: the fake LLM server, and API keys that must never leak."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import agents.brains.hybrid  # noqa: F401  (loaded now, not by make_brain inside a test's loop: the two SDKs
# take seconds to import on a busy machine, and a loop blocked that long loses its NATS link and the board's lease)
from agents.brains import make_brain
from agents.brains.base import Accounting, Brain
from blackboard.client import Board
from swarm.ground.bus import Bus
from swarm.ground.settings import BoardSettings, BrainSettings
from tests.agents.helpers import ANTHROPIC_KEY, OPENAI_KEY
from tests.fakellm import fake_llm  # noqa: F401  (a fixture)
from tests.service.conftest import running_service, wait_leading


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Both providers' keys in the environment, as a person would set them."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    return {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY}


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials anywhere: no key variables, and a home without an Anthropic profile."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_CONFIG_DIR",
                 "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
async def open_brain() -> AsyncIterator[Callable[..., Brain]]:
    """make_brain, and each brain closed (its SDK's connections) before the test's loop ends."""
    made: list[Brain] = []

    def make(settings: BrainSettings, accounting: Accounting | None = None, seed: int = 0) -> Brain:
        made.append(make_brain(settings, accounting or Accounting(), seed))
        return made[-1]

    yield make
    for brain in made:
        await brain.aclose()


@pytest.fixture
async def board(bus: Bus, tmp_path: Path) -> AsyncIterator[Board]:
    """A real blackboard service (a candidate is promoted on one seed) and a client of it."""
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings(promotion_seeds=1)) as service:
        await wait_leading(service)
        yield Board(bus, agent="tester", retry_seconds=20)
