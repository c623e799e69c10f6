"""The reviewer: judges candidates before they can be promoted.

Does the diff do what the hypothesis says, touch nothing outside the contract, game no metric;
is the gain worth the added complexity? Static checks run first and their findings go to the
brain with the evidence (the parent, the diff, the run metrics of the candidate and its parent, the
similar earlier trials); a static finding of gaming or of a contract breach is a hard reject that no
brain's approval overrules. The verdict and its reasons are published as ReviewDone."""

from __future__ import annotations

import logging

from agents.brains import novelty, rules
from agents.brains.base import BrainError, ReviewTask, ReviewVerdict
from agents.brains.desk import metrics_of
from agents.runtime import Role
from blackboard.client import Claim
from blackboard.events import ReviewDone, new_id
from harness import guard
from roles.common import contract_text, program, unified_diff

log = logging.getLogger(__name__)


def static_problems(code: str, diff: str) -> list[str]:
    """What the harness's own checks say about a patch: the guard on the code and on the diff."""
    problems = list(guard.check_source(code).problems)
    if diff:
        problems += guard.check_diff(diff).problems
    return problems


def review_task(claim: Claim, program_text: str) -> ReviewTask:
    """What the brain judges: the patch against its parent's code, with the diff computed here.

    The diff the implementer submitted is not trusted (a repair's used to be against its crashed
    attempt, hiding what that attempt added); the reviewer diffs the code it was given itself.
    """
    patch, hyp, best = claim.patch or {}, claim.hypothesis or {}, claim.best or {}
    parent_code, code = (claim.parent or {}).get("code", ""), patch["code"]
    diff = unified_diff(parent_code, code)
    return ReviewTask(program=program_text, contract=contract_text(), title=hyp.get("title", ""),
                      rationale=hyp.get("rationale", ""), intent=hyp.get("intent") or {}, parent_code=parent_code,
                      code=code, diff=diff, values=patch.get("values", []), best_values=best.get("values", []),
                      spread=best.get("spread"), problems=static_problems(code, diff))  # fmt: skip


class Reviewer(Role):
    name = "reviewer"

    async def run(self) -> None:
        ctx = self.ctx
        self.program = program(self.name)
        while not ctx.stopping:
            ctx.say("waiting for a candidate to review")
            claim = await ctx.claim(["review"], [f"{tier}/*" for tier in ctx.settings.agents.review_tiers] or ["*"], wait=10)
            if claim is None or claim.patch is None:
                continue
            ctx.heartbeat.hold(claim.claim)
            await self._review(claim)

    async def _review(self, claim: Claim) -> None:
        ctx, patch, hyp = self.ctx, claim.patch or {}, claim.hypothesis or {}
        ctx.say(f"reviewing {patch['id']} ({hyp.get('title', '')})")
        rows = {row["patch"]: row for row in (await ctx.board.ask("desk", {"arena": claim.arena}, timeout=30))["trials"]}
        others = [row for key, row in rows.items() if key != patch["id"]]
        task = review_task(claim, self.program).model_copy(update=dict(
            metrics=metrics_of(rows.get(patch["id"], {})),
            parent_metrics=metrics_of(rows.get((claim.parent or {}).get("id") or "", {})),
            similar=novelty.similar_rows(hyp.get("title", ""), hyp.get("rationale", ""), others),
        ))  # fmt: skip
        try:
            verdict = await ctx.brain.review(task)  # type: ignore[union-attr]
        except BrainError as exc:
            log.warning("%s: review of %s failed, back to the pool: %s", ctx.spec.agent, patch["id"], exc)
            await ctx.release(claim.claim, done=False, reason=f"the brain failed: {exc}")
            return
        if (hard := rules.hard_findings(task)) and verdict.verdict != "reject":
            # Gaming and contract findings are hard rejects: no brain's approval overrules them.
            verdict = ReviewVerdict(verdict="reject", reasons=[f"hard reject, {h}" for h in hard] + verdict.reasons)
        await ctx.board.publish(ReviewDone(by=ctx.spec.agent, review=new_id("v"), patch=patch["id"], work=claim.work,
                                           verdict=verdict.verdict, reasons=verdict.reasons))  # fmt: skip
        ctx.say(f"{verdict.verdict}d {patch['id']}: {'; '.join(verdict.reasons)[:200]}")
        await ctx.release(claim.claim, done=True, reason=f"review: {verdict.verdict}")
        ctx.count()
