"""The reviewer: judges candidates before they can be promoted.

Does the diff do what the hypothesis says, touch nothing outside the contract, game no metric;
is the gain worth the added complexity? Static checks run first and their findings go to the
brain; the verdict and its reasons are published as ReviewDone."""

from __future__ import annotations

import logging

from agents.brains.base import BrainError, ReviewTask
from agents.runtime import Role
from blackboard.client import Claim
from blackboard.events import ReviewDone, new_id
from harness import guard
from roles.common import contract_text, program

log = logging.getLogger(__name__)


def static_problems(code: str, diff: str) -> list[str]:
    """What the harness's own checks say about a patch: the guard on the code and on the diff."""
    problems = list(guard.check_source(code).problems)
    if diff:
        problems += guard.check_diff(diff).problems
    return problems


class Reviewer(Role):
    name = "reviewer"

    async def run(self) -> None:
        ctx = self.ctx
        self.program = program(self.name)
        while not ctx.stopping:
            ctx.say("waiting for a candidate to review")
            claim = await ctx.claim(["review"], ["*"], wait=10)
            if claim is None or claim.patch is None:
                continue
            ctx.heartbeat.hold(claim.claim)
            await self._review(claim)

    async def _review(self, claim: Claim) -> None:
        ctx, patch, hyp = self.ctx, claim.patch or {}, claim.hypothesis or {}
        ctx.say(f"reviewing {patch['id']} ({hyp.get('title', '')})")
        code, diff = patch["code"], patch.get("diff", "")
        task = ReviewTask(program=self.program, contract=contract_text(), title=hyp.get("title", ""),
                          rationale=hyp.get("rationale", ""), intent=hyp.get("intent") or {},
                          parent_code=(claim.parent or {}).get("code", ""), code=code, diff=diff,
                          values=patch.get("values", []), best_values=(claim.best or {}).get("values", []),
                          spread=(claim.best or {}).get("spread"), problems=static_problems(code, diff))  # fmt: skip
        try:
            verdict = await ctx.brain.review(task)  # type: ignore[union-attr]
        except BrainError as exc:
            log.warning("%s: review of %s failed, back to the pool: %s", ctx.spec.agent, patch["id"], exc)
            await ctx.release(claim.claim, done=False, reason=f"the brain failed: {exc}")
            return
        await ctx.board.publish(ReviewDone(by=ctx.spec.agent, review=new_id("v"), patch=patch["id"], work=claim.work,
                                           verdict=verdict.verdict, reasons=verdict.reasons))  # fmt: skip
        ctx.say(f"{verdict.verdict}d {patch['id']}: {'; '.join(verdict.reasons)[:200]}")
        await ctx.release(claim.claim, done=True, reason=f"review: {verdict.verdict}")
        ctx.count()
