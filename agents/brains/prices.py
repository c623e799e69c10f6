"""What a model call costs: list prices per million tokens, and the default model of each provider.

Prices are the providers' published list prices for standard requests (short prompts, no batch
discount), as of late 2026; a price that changes, or a model not listed here (a local server, a
new release), is set in the settings: `brain.price_input_per_mtok` / `brain.price_output_per_mtok`.
Cached-input discounts are ignored: the swarm does not ask for caching, so counting every input
token at full price is exact for its calls and never under-counts a budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarm.ground.settings import BrainSettings

DEFAULT_MODELS = {
    "anthropic": "claude-sonnet-5-5",  # the current Sonnet: good code at a fifth of the flagship's price
    "openai": "gpt-6-sol",  # the current mid tier, priced like Sonnet
}

# USD per million tokens: (input, output).
PRICES: dict[str, tuple[float, float]] = {
    "claude-fable-5-1": (10.0, 50.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-haiku-5-5": (0.10, 0.50),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "gpt-6-astra": (10.0, 50.0),
    "gpt-6-sol": (2.0, 10.0),
    "gpt-6-luna": (0.10, 0.50),
    "gpt-5.6-sol": (5.0, 30.0),
    "gpt-5.6-terra": (2.0, 12.0),
    "gpt-5.6-luna": (0.20, 1.20),
}


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


def price(model: str, settings: BrainSettings) -> Price | None:
    """The price of `model`: the settings' override, else the table (a dated snapshot such as
    `claude-haiku-4-5-20251001` is priced as its alias), else None: unknown."""
    listed = PRICES.get(model) or next((p for name, p in _longest_first() if model.startswith(name + "-")), None)
    if settings.price_input_per_mtok is None and settings.price_output_per_mtok is None:
        return Price(*listed) if listed else None
    if listed is None and (settings.price_input_per_mtok is None or settings.price_output_per_mtok is None):
        return None  # half a price for an unknown model is still no price
    base_in, base_out = listed or (0.0, 0.0)
    given_in, given_out = settings.price_input_per_mtok, settings.price_output_per_mtok
    return Price(base_in if given_in is None else given_in, base_out if given_out is None else given_out)


def model_name(settings: BrainSettings, provider: str) -> str | None:
    """The model to call: the setting, else the provider's default (none for a custom server)."""
    if settings.model:
        return settings.model
    if provider == "openai" and settings.base_url:
        return None  # a vLLM or Ollama server serves models we cannot guess
    return DEFAULT_MODELS[provider]


def _longest_first() -> list[tuple[str, tuple[float, float]]]:
    return sorted(PRICES.items(), key=lambda item: -len(item[0]))
