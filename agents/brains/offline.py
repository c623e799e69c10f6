"""The offline brain, the default: a classical optimiser over the knobs and mechanical edits.

It needs no network and no key, so a swarm runs on a fresh machine; LLM brains answer with it
when the budget is spent. Ideas come from the TPE optimiser (agents.brains.optimiser), code from
agents.knobs.edit, reviews from the static rules (agents.brains.rules). What it cannot do, it
says: an idea given only in words raises CannotDo, and it never repairs (None).
"""

from __future__ import annotations

from agents import knobs
from agents.brains import rules
from agents.brains.base import (
    Accounting,
    Brain,
    CannotDo,
    Check,
    Idea,
    IdeaContext,
    Implementation,
    ImplementTask,
    RepairTask,
    ReviewTask,
    ReviewVerdict,
)
from agents.brains.optimiser import Optimiser, Proposal, title


class OfflineBrain(Brain):
    name = "offline"

    def __init__(self, accounting: Accounting | None = None, seed: int = 0) -> None:
        super().__init__(accounting)
        self.optimiser = Optimiser(seed)

    async def ideas(self, context: IdeaContext) -> list[Idea]:
        return [to_idea(p, context) for p in self.optimiser.propose(context, context.n)]

    async def implement(self, task: ImplementTask, check: Check | None = None) -> Implementation:
        changes = task.intent.get("knobs")
        if not isinstance(changes, dict) or not changes:
            raise CannotDo(f"offline brain: {task.title!r} names no knob values; it can only turn knobs")
        if task.intent.get("change"):
            raise CannotDo(f"offline brain: {task.title!r} asks for a code change in words: {task.intent['change']}")
        try:
            code = knobs.edit(task.parent_code, changes)
        except knobs.KnobError as exc:
            raise CannotDo(f"offline brain: {exc}") from exc
        done = ", ".join(f"{k} = {knobs.render(knobs.read(code)[k])}" for k in changes)
        return Implementation(code=code, notes=f"set {done} in place; nothing else changed")

    async def repair(self, task: RepairTask, check: Check | None = None,
                     thread: list[dict[str, str]] | None = None) -> Implementation | None:  # fmt: skip
        return None  # a knob edit cannot crash in a way that another knob edit would fix

    async def review(self, task: ReviewTask) -> ReviewVerdict:
        return rules.review(task)


def to_idea(proposal: Proposal, context: IdeaContext) -> Idea:
    """An optimiser proposal as a hypothesis a person can read, building on the arena's best."""
    verb = "Explore" if proposal.mode == "explore" else "Tune"
    moves = "; ".join(f"{name} from {knobs.render(proposal.before[name])} to {knobs.render(value)}"
                      for name, value in sorted(proposal.changes.items()))  # fmt: skip
    rationale = f"{verb} around the best: {moves}. What the optimiser saw: {proposal.evidence}"
    return Idea(title=title(proposal.changes, proposal.before), rationale=rationale,
                intent={"knobs": dict(proposal.changes)}, parent=context.best_patch)  # fmt: skip
