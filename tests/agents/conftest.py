"""Fixtures for the brain tests: the fake LLM server, and API keys that must never leak."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agents.helpers import ANTHROPIC_KEY, OPENAI_KEY
from tests.fakellm import fake_llm  # noqa: F401  (a fixture)


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Both providers' keys in the environment, as a person would set them."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    return {"anthropic": ANTHROPIC_KEY, "openai": OPENAI_KEY}


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials anywhere: no key variables, and an empty Anthropic config directory."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL",
                 "OPENAI_BASE_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path / "anthropic"))
