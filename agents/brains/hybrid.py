"""The hybrid brain: the optimiser proposes every trial; after its warm-up, the LLM takes a share.

After the design that beat both TPE and an LLM alone on this benchmark (arXiv 2603.24647): for each
idea asked for, the optimiser's proposal is ready first. Until TPE has finished its random start-up
(N_STARTUP knob trials) every slot is the optimiser's: an LLM guessing before there is evidence
only spends money. After it, with probability `hybrid_share` a slot goes to the LLM, which sees the
search space, the optimiser's proposals and their evidence, the best configurations and the recent
trials, and may do better: a move the optimiser does not see, or a code change it cannot make.
Code-change trials stay out of the optimiser's model (optimiser.knob_trials). Implementation is mechanical
when an idea only turns knobs, and the LLM's otherwise; repairs and reviews are the LLM's, the
reviews with the static rules' findings in the prompt.
"""

from __future__ import annotations

import logging
import random

from agents.brains import prompts
from agents.brains.base import (
    Accounting,
    Brain,
    BrainError,
    Check,
    Idea,
    IdeaContext,
    Implementation,
    ImplementTask,
    RepairTask,
    ReviewTask,
    ReviewVerdict,
)
from agents.brains.llm import LLMBrain
from agents.brains.offline import to_idea
from agents.brains.optimiser import warmed_up

log = logging.getLogger(__name__)


class HybridBrain(Brain):
    name = "hybrid"

    def __init__(self, llm: LLMBrain, share: float, accounting: Accounting | None = None, seed: int = 0) -> None:
        super().__init__(accounting)
        self.llm = llm
        self.offline = llm.offline  # one optimiser, one random stream
        self.share = share
        self.rng = random.Random(seed)

    async def ideas(self, context: IdeaContext) -> list[Idea]:
        proposals = self.offline.optimiser.propose(context, context.n)
        ideas = [to_idea(p, context) for p in proposals]
        slots = sum(self.rng.random() < self.share for _ in range(context.n)) if warmed_up(context) else 0
        if not slots or self.llm.spent():
            return ideas
        view = prompts.optimiser_view(context, proposals)
        try:
            theirs = await self.llm.ideas(context.model_copy(update={"n": slots}), optimiser=view)
        except BrainError as exc:
            # The optimiser's ideas are ready and sound: the swarm loses nothing but the LLM's turn.
            log.warning("hybrid: the LLM's ideas failed, keeping the optimiser's: %s", exc)
            return ideas
        return (theirs + ideas[slots:])[: context.n]

    async def note(self, context: IdeaContext) -> str | None:
        return await self.llm.note(context)

    async def implement(self, task: ImplementTask, check: Check | None = None) -> Implementation:
        return await self.llm.implement(task, check)  # knob-only ideas are applied mechanically there

    async def repair(self, task: RepairTask, check: Check | None = None,
                     thread: list[dict[str, str]] | None = None) -> Implementation | None:  # fmt: skip
        return await self.llm.repair(task, check, thread)

    async def review(self, task: ReviewTask) -> ReviewVerdict:
        return await self.llm.review(task)

    async def check(self) -> None:
        await self.llm.check()

    async def aclose(self) -> None:
        await self.llm.aclose()
