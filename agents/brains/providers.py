"""The two model APIs behind the LLM brains, each through its official async SDK.

A provider turns (system prompt, messages) into a Completion: the answer's text and the tokens
the response says were used. It knows nothing of tasks or formats (agents.brains.prompts does).
The SDKs read the keys from their usual environment variables (ANTHROPIC_API_KEY,
OPENAI_API_KEY) and retry rate limits and server errors themselves (`brain.max_retries`); what
still fails becomes a BrainError whose text never holds a key.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import anthropic
import openai

from agents.brains.base import BrainError
from agents.brains.prices import model_name
from swarm.ground.errors import ConfigError
from swarm.ground.settings import BrainSettings

KEY_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY")
LOCAL_KEY = "unused"  # what a keyless OpenAI-compatible server gets: the SDK insists on some key


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    stop_reason: str  # normalised: "end", "max_tokens" (the answer was cut), or the API's own word
    model: str


class Unusable(BrainError):
    """The provider refuses the model or the key (HTTP 401, 403, 404): every call would fail the same way."""


REFUSALS = (anthropic.AuthenticationError, anthropic.PermissionDeniedError, anthropic.NotFoundError,
            openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)  # fmt: skip


class Provider(ABC):
    name: str

    def __init__(self, settings: BrainSettings, model: str) -> None:
        self.settings = settings
        self.model = model

    @abstractmethod
    async def complete(self, system: str, messages: list[dict[str, str]], max_tokens: int | None = None) -> Completion:
        """The model's answer; `max_tokens` overrides the settings' room for output (a cut-off answer's retry)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the SDK's connection pool."""


class AnthropicProvider(Provider):
    """Claude through the Messages API (POST /v1/messages)."""

    name = "anthropic"

    def __init__(self, settings: BrainSettings, model: str) -> None:
        super().__init__(settings, model)
        try:
            self.client = anthropic.AsyncAnthropic(base_url=settings.base_url, timeout=settings.timeout_seconds,
                                                   max_retries=settings.max_retries)  # fmt: skip
        except anthropic.AnthropicError as exc:  # a profile or config file named but unreadable
            raise ConfigError(f"brain anthropic: {redact(str(exc))}") from None
        if not (self.client.api_key or self.client.auth_token or self.client.credentials):
            raise ConfigError("brain anthropic: no credentials; set ANTHROPIC_API_KEY")

    async def complete(self, system: str, messages: list[dict[str, str]], max_tokens: int | None = None) -> Completion:
        # This SDK has no temperature argument any more (current models refuse one); older models
        # and gateways still take it in the body.
        extra = None if self.settings.temperature is None else {"temperature": self.settings.temperature}
        try:
            response = await self.client.messages.create(
                model=self.model, max_tokens=max_tokens or self.settings.max_tokens, system=system,
                messages=messages, extra_body=extra)  # type: ignore[arg-type]  # fmt: skip
        except REFUSALS as exc:
            raise Unusable(f"anthropic: {refusal(exc)}") from None
        except anthropic.APIError as exc:
            raise BrainError(f"anthropic: {type(exc).__name__}: {redact(str(exc))}") from None
        # Thinking blocks may come first (adaptive thinking is on by default on current models).
        text = "".join(block.text for block in response.content if block.type == "text")
        usage = response.usage
        # Cache reads and writes are input too; the swarm asks for no caching, so they are 0 here.
        tokens_in = usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        stop = "max_tokens" if response.stop_reason == "max_tokens" else (
            "end" if response.stop_reason in ("end_turn", "stop_sequence") else str(response.stop_reason))  # fmt: skip
        return Completion(text, tokens_in, usage.output_tokens, stop, response.model or self.model)

    async def aclose(self) -> None:
        await self.client.close()


class OpenAIProvider(Provider):
    """OpenAI, or any OpenAI-compatible server, through Chat Completions (POST /v1/chat/completions)."""

    name = "openai"

    def __init__(self, settings: BrainSettings, model: str) -> None:
        super().__init__(settings, model)
        key = None if os.environ.get("OPENAI_API_KEY") else LOCAL_KEY
        if key is not None and not settings.base_url:
            raise ConfigError("brain openai: no credentials; set OPENAI_API_KEY (or brain.base_url for a local server)")
        self.client = openai.AsyncOpenAI(api_key=key, base_url=settings.base_url, timeout=settings.timeout_seconds,
                                         max_retries=settings.max_retries)  # fmt: skip

    async def complete(self, system: str, messages: list[dict[str, str]], max_tokens: int | None = None) -> Completion:
        extra: dict[str, Any] = {} if self.settings.temperature is None else {"temperature": self.settings.temperature}
        # OpenAI's reasoning models take only max_completion_tokens; many compatible servers
        # (older vLLM, llama.cpp, Ollama) know only max_tokens.
        limit = "max_tokens" if self.settings.base_url else "max_completion_tokens"
        extra[limit] = max_tokens or self.settings.max_tokens
        try:
            conversation = [{"role": "system", "content": system}, *messages]
            create = self.client.chat.completions.create
            response = await create(model=self.model, messages=conversation, **extra)  # type: ignore[arg-type]
        except REFUSALS as exc:
            raise Unusable(f"openai: {refusal(exc)}") from None
        except openai.APIError as exc:
            raise BrainError(f"openai: {type(exc).__name__}: {redact(str(exc))}") from None
        if not response.choices:
            raise BrainError("openai: the response has no choices")
        choice = response.choices[0]
        usage = response.usage  # a compatible server may leave it out
        stop = {"stop": "end", "length": "max_tokens"}.get(choice.finish_reason or "", str(choice.finish_reason))
        return Completion(choice.message.content or "", usage.prompt_tokens if usage else 0,
                          usage.completion_tokens if usage else 0, stop, response.model or self.model)  # fmt: skip

    async def aclose(self) -> None:
        await self.client.close()


def make_provider(kind: str, settings: BrainSettings) -> Provider:
    """The provider for `kind`; ConfigError when it cannot work as configured."""
    model = model_name(settings, kind)
    if model is None:
        raise ConfigError(f"brain {kind}: brain.model is required with brain.base_url ({settings.base_url})")
    if kind == "anthropic":
        return AnthropicProvider(settings, model)
    if kind == "openai":
        return OpenAIProvider(settings, model)
    raise ConfigError(f"brain: no LLM provider named {kind!r}; use anthropic or openai")


def refusal(exc: anthropic.APIStatusError | openai.APIStatusError) -> str:
    """The provider's own words for a refusal: HTTP status, error type or code, message."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)  # Anthropic nests the error; the OpenAI SDK hands over the inner one
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return f"HTTP {exc.status_code}: {redact(str(exc))}"
    return f"HTTP {exc.status_code} {error.get('code') or error.get('type') or 'error'}: {redact(error['message'])}"


def redact(text: str) -> str:
    """`text` without any API key from the environment in it (an error may quote a request)."""
    for name in KEY_VARIABLES:
        secret = os.environ.get(name, "")
        if len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    return text
