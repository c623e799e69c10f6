"""Brains decide; roles act. `make_brain` builds the one the settings ask for.

- offline (the default): TPE over the knobs of train.py, mechanical edits, static review rules.
- anthropic / openai: an LLM through its official SDK, with the prompts in agents.brains.prompts.
- hybrid: the optimiser every trial, the LLM on a share of them.

The implementations are imported when a brain is made, not with this package: `agents.knobs`
and the roles import `agents.brains.base`, and should not load optuna and two SDKs for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.brains.base import Accounting, Brain
from swarm.ground.errors import ConfigError
from swarm.ground.settings import BrainSettings

if TYPE_CHECKING:
    from agents.brains.llm import LLMBrain


def make_brain(settings: BrainSettings, accounting: Accounting, seed: int = 0) -> Brain:
    """The brain `settings.kind` names; ConfigError when its provider cannot work as configured
    (no key, no model for a custom server, a budget with no price to count it by)."""
    from agents.brains.hybrid import HybridBrain
    from agents.brains.offline import OfflineBrain

    if settings.kind == "offline":
        return OfflineBrain(accounting, seed)
    kind = settings.hybrid_llm if settings.kind == "hybrid" else settings.kind
    llm = make_llm(kind, settings, accounting, seed)
    if settings.kind == "hybrid":
        return HybridBrain(llm, settings.hybrid_share, accounting, seed)
    return llm


async def check_brain(settings: BrainSettings) -> None:
    """Make the brain the settings name and check it once (Brain.check): ConfigError, with the
    provider's message, when it cannot work at all. A swarm asks before it starts anything."""
    brain = make_brain(settings, Accounting())
    try:
        await brain.check()
    finally:
        await brain.aclose()


def make_llm(kind: str, settings: BrainSettings, accounting: Accounting, seed: int = 0) -> LLMBrain:
    """The LLM brain for provider `kind` (anthropic or openai)."""
    from agents.brains.llm import LLMBrain
    from agents.brains.prices import price
    from agents.brains.providers import make_provider

    provider = make_provider(kind, settings)
    cost = price(provider.model, settings)
    if cost is None and settings.budget_usd is not None:
        raise ConfigError(f"brain {kind}: no price known for model {provider.model!r}, so the budget cannot be kept; "
                          "set brain.price_input_per_mtok and brain.price_output_per_mtok")  # fmt: skip
    return LLMBrain(provider, cost, accounting, seed)


__all__ = ["Accounting", "Brain", "check_brain", "make_brain", "make_llm"]
