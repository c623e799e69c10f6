"""The LLM brain: any provider, the same prompts, the same accounting.

Every call asks the swarm's budget first: when it is spent, no request is made and the brain
answers as the offline brain would (said once in the log). Every response's tokens and cost are
reported through `accounting.on_usage`, retries included. An answer in the wrong format gets one
retry with the parser's complaint sent back to the model; a second bad answer is a BrainError. An
answer cut off at the output limit is asked again with twice the room (never "answer more briefly").
Code is asked for as search/replace edits against its parent (a whole file is the fallback) and, in
the same conversation, sent back with what the pre-flight found until it passes (PREFLIGHTS times).
A knob-only idea is applied mechanically (agents.knobs), whatever the brain.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from agents.brains import prompts, rules
from agents.brains.base import (
    Accounting,
    Brain,
    BrainError,
    CannotDo,
    Check,
    Idea,
    PreflightFailed,
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
from agents.brains.prompts import AnswerError, Declined, Prompt
from agents.brains.providers import Completion, Provider, Unusable
from swarm.ground.errors import ConfigError

T = TypeVar("T")
ATTEMPTS = 2  # the first answer and one retry with the error fed back
PREFLIGHTS = 3  # code sent back after failing the pre-flight (guard, smoke run), in the same conversation
PROBE = "Reply with the word ready."  # the start-up check's request: a few tokens in, a few out
PROBE_TOKENS = 16
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

    async def implement(self, task: ImplementTask, check: Check | None = None) -> Implementation:
        if set(task.intent) == {"knobs"} and task.intent["knobs"]:
            try:  # a knob turn is mechanical: no tokens spent, no chance to change anything else
                return await self.offline.implement(task)
            except CannotDo as exc:
                log.info("%s: %s; asking the model instead", self.name, exc)
        try:
            return await self.ask(prompts.implement(task), lambda text: prompts.parse_edits(text, task.parent_code),
                                  _on_code(check))  # fmt: skip
        except BudgetSpent:
            return await self.offline.implement(task)

    async def repair(self, task: RepairTask, check: Check | None = None,
                     thread: list[dict[str, str]] | None = None) -> Implementation | None:  # fmt: skip
        try:
            return await self.ask(prompts.repair(task, follow_up=bool(thread)),
                                  lambda text: prompts.parse_repair(text, task.code), _on_code(check), thread)  # fmt: skip
        except Declined as exc:
            log.info("%s: declined to repair %r: %s", self.name, task.title, exc)
            return None
        except BudgetSpent:
            return await self.offline.repair(task)

    async def review(self, task: ReviewTask) -> ReviewVerdict:
        static = rules.review(task)
        if rules.hard_findings(task):
            return static  # a hard reject that no answer could overrule: nothing to pay a model for
        try:
            return await self.ask(prompts.review(task, static), prompts.parse_verdict)
        except BudgetSpent:
            return static  # what the offline brain answers

    async def check(self) -> None:
        """One small request before any work, the way every call will be made: a model the provider
        does not know, or a key it refuses, is a ConfigError now with the provider's message, not a
        failure of every call while the roles retry. Anything else (a busy or slow server) is left to
        the calls themselves, which retry; it is logged."""
        if self.spent():
            return
        try:
            completion = await self.provider.complete("You check that a model answers.", [{"role": "user", "content": PROBE}],
                                                      max_tokens=PROBE_TOKENS)  # fmt: skip
        except Unusable as exc:
            raise ConfigError(f"brain {self.name}: model {self.provider.model!r} cannot be used: {exc}") from None
        except BrainError as exc:
            log.warning("%s: the start-up check of model %r failed; the calls will retry: %s", self.name,
                        self.provider.model, exc)  # fmt: skip
            return
        self._record(completion)

    async def aclose(self) -> None:
        await self.provider.aclose()

    async def ask(self, prompt: Prompt, parse: Callable[[str], T], check: Callable[[T], Awaitable[T | str]] | None = None,
                  thread: list[dict[str, str]] | None = None) -> T:  # fmt: skip
        """Ask and parse, in one conversation: a bad answer goes back once with the parser's complaint,
        an answer cut off at the output limit goes back with twice the room, and a parsed answer that
        fails `check` (the pre-flight) goes back with what failed, up to PREFLIGHTS times.
        BudgetSpent before any request when the budget is gone; BrainError when it cannot end well.
        `thread` continues a conversation: the request is added to it, and the answer used too."""
        messages = thread if thread is not None else []
        messages.append({"role": "user", "content": prompt.user})
        limit, bad, preflights = self.provider.settings.max_tokens, 0, 0
        while True:
            if self.spent():
                raise BudgetSpent
            completion = await self.provider.complete(prompt.system, messages, max_tokens=limit)
            self._record(completion)
            if completion.stop_reason == "max_tokens":
                feedback, error = prompts.cut_off(limit, limit * 2), f"the answer was cut off at {limit} tokens"
                limit *= 2
            else:
                try:
                    result = parse(completion.text)
                except AnswerError as exc:
                    feedback, error = prompts.retry(str(exc)), str(exc)
                else:
                    verdict = await check(result) if check is not None else result
                    if check is None or not isinstance(verdict, str):
                        messages.append({"role": "assistant", "content": completion.text})
                        return verdict  # type: ignore[return-value]
                    preflights += 1
                    if preflights > PREFLIGHTS:
                        raise PreflightFailed(f"{self.name} ({self.provider.model}): the code still fails the pre-flight "
                                         f"after {PREFLIGHTS} fixes: {verdict[:500]}")  # fmt: skip
                    log.info("%s: pre-flight failed (%d of %d), sent back: %s", self.name, preflights, PREFLIGHTS,
                             verdict[:200])  # fmt: skip
                    messages += [{"role": "assistant", "content": completion.text},
                                 {"role": "user", "content": prompts.preflight(verdict)}]  # fmt: skip
                    continue
            bad += 1
            log.info("%s: unusable answer (attempt %d of %d): %s", self.name, bad, ATTEMPTS, error)
            if bad >= ATTEMPTS:
                raise BrainError(f"{self.name} ({self.provider.model}): no usable answer after {ATTEMPTS} attempts: {error}")
            messages += [{"role": "assistant", "content": completion.text or "(empty)"},
                         {"role": "user", "content": feedback}]  # fmt: skip

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


def _on_code(check: Check | None) -> Callable[[Implementation], Awaitable[Implementation | str]] | None:
    """`check` of an implementation's code: the implementation marked checked, or what failed."""
    if check is None:
        return None

    async def run(done: Implementation) -> Implementation | str:
        problem = await check(done.code)
        return done.model_copy(update={"checked": True}) if problem is None else problem

    return run
