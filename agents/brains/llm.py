"""The LLM brain: any provider, the same prompts, the same accounting.

Every call asks the swarm's budget first: when it is spent, no request is made and the brain
answers as the offline brain would (said once in the log). Every response's tokens and cost are
reported through `accounting.on_usage`, retries included. An answer in the wrong format gets one
retry with the parser's complaint sent back to the model; a second bad answer is a BrainError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from agents.brains import prompts, rules
from agents.brains.base import (
    Accounting,
    Brain,
    BrainError,
    Idea,
    IdeaContext,
    Implementation,
    ImplementTask,
    RepairTask,
    ReviewTask,
    ReviewVerdict,
    Usage,
)
from agents.brains.offline import OfflineBrain
from agents.brains.prices import Price
from agents.brains.prompts import AnswerError, Prompt
from agents.brains.providers import Completion, Provider

T = TypeVar("T")
ATTEMPTS = 2  # the first answer and one retry with the error fed back
log = logging.getLogger(__name__)


class BudgetSpent(BrainError):
    """The budget ran out before a call: the brain answers offline instead (it never leaves this module)."""


class LLMBrain(Brain):
    def __init__(self, provider: Provider, price: Price | None, accounting: Accounting | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        super().__init__(accounting)
        self.name = provider.name
        self.provider = provider
        self.price = price
        self.offline = OfflineBrain(self.accounting, seed)  # answers when the budget is spent
        self._said_spent = False

    async def ideas(self, context: IdeaContext, optimiser: str | None = None) -> list[Idea]:
        """Ideas from the model; `optimiser` is the optimiser's state, when a hybrid brain asks."""
        prompt = prompts.ideas(context, optimiser)
        try:
            return await self.ask(prompt, lambda text: prompts.parse_ideas(text, context))
        except BudgetSpent:
            return await self.offline.ideas(context)

    async def note(self, context: IdeaContext) -> str | None:
        try:
            return await self.ask(prompts.note(context), prompts.parse_note)
        except BudgetSpent:
            return None

    async def implement(self, task: ImplementTask) -> Implementation:
        try:
            return await self.ask(prompts.implement(task), prompts.parse_code)
        except BudgetSpent:
            return await self.offline.implement(task)

    async def repair(self, task: RepairTask) -> Implementation | None:
        try:
            return await self.ask(prompts.repair(task), prompts.parse_code)
        except BudgetSpent:
            return await self.offline.repair(task)

    async def review(self, task: ReviewTask) -> ReviewVerdict:
        static = rules.review(task)
        try:
            return await self.ask(prompts.review(task, static), prompts.parse_verdict)
        except BudgetSpent:
            return static  # what the offline brain answers

    async def aclose(self) -> None:
        await self.provider.aclose()

    async def ask(self, prompt: Prompt, parse: Callable[[str], T]) -> T:
        """Ask, parse, and on a bad answer ask once more with the error; BudgetSpent before any
        request when the budget is gone, BrainError when the model fails or answers badly twice."""
        messages = [{"role": "user", "content": prompt.user}]
        error = ""
        for attempt in range(ATTEMPTS):
            if self.spent():
                raise BudgetSpent
            completion = await self.provider.complete(prompt.system, messages)
            self._record(completion)
            try:
                if completion.stop_reason == "max_tokens":
                    raise AnswerError(f"the answer was cut off at the limit of {self.provider.settings.max_tokens} "
                                      "tokens; answer more briefly")  # fmt: skip
                return parse(completion.text)
            except AnswerError as exc:
                error = str(exc)
                log.info("%s: unusable answer (attempt %d of %d): %s", self.name, attempt + 1, ATTEMPTS, error)
                messages += [{"role": "assistant", "content": completion.text or "(empty)"},
                             {"role": "user", "content": prompts.retry(error)}]  # fmt: skip
        raise BrainError(f"{self.name} ({self.provider.model}): no usable answer after {ATTEMPTS} attempts: {error}")

    def spent(self) -> bool:
        """Whether the swarm's budget is gone (said once in the log when it first is)."""
        left = self.accounting.budget_left()
        if left is None or left > 0:
            return False
        if not self._said_spent:
            log.warning("%s: the swarm's LLM budget is spent; answering as the offline brain from now on", self.name)
            self._said_spent = True
        return True

    def _record(self, completion: Completion) -> None:
        cost = self.price.cost(completion.input_tokens, completion.output_tokens) if self.price else 0.0
        usage = Usage(provider=self.name, model=completion.model, input_tokens=completion.input_tokens,
                      output_tokens=completion.output_tokens, cost_usd=cost)  # fmt: skip
        self.accounting.spent_locally += cost
        self.accounting.on_usage(usage)
