"""The implementer: turns an approved hypothesis into a patch, runs it, publishes the result.

It prepares its next patch while the current run trains (two tasks and a queue of one), so its
device never waits for the brain. A patch that crashes or is rejected is repaired from its log
tail, at most `agents.repair_attempts` times; every attempt is a recorded run.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from agents.arena import ArenaInfo, describe_async, open_arena
from agents.brains.base import BrainError, CannotDo, ImplementTask, RepairTask
from agents.runtime import Role
from blackboard.client import Claim
from blackboard.events import PatchSubmitted, new_id
from blackboard.rules import code_hash
from blackboard.state import REPAIRABLE
from harness.runner import RunResult
from roles.common import Job, contract_text, program, run_job, unified_diff
from swarm.ground.errors import BoardError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ready:
    claim: Claim
    job: Job
    task: ImplementTask


class Implementer(Role):
    name = "implementer"
    needs_device = True

    async def run(self) -> None:
        ctx = self.ctx
        ctx.say("preparing the data and opening the arena")
        self.arena = await describe_async(ctx.settings.harness.tier, ctx.spec.device or "cpu", ctx.settings.harness)
        await open_arena(ctx.board, self.arena)
        self.program = program(self.name)
        ready: asyncio.Queue[Ready] = asyncio.Queue(maxsize=1)
        preparing = asyncio.create_task(self._prepare_loop(ready), name="prepare")
        try:
            while not ctx.stopping:
                getting = asyncio.create_task(ready.get())
                await asyncio.wait({getting, preparing}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    preparing.result()  # the preparer failed: raise its error
                    return
                ready.task_done()  # taken: the preparer may claim the next one while this trains
                await self._run(getting.result())
        finally:
            preparing.cancel()
            await asyncio.gather(preparing, return_exceptions=True)

    async def _prepare_loop(self, ready: asyncio.Queue[Ready]) -> None:
        ctx = self.ctx
        while not ctx.stopping:
            ctx.say("waiting for an approved hypothesis")
            claim = await ctx.claim(["implement"], [self.arena.id], wait=10)
            if claim is None:
                continue
            ctx.heartbeat.hold(claim.claim)
            item = await self._prepare(claim)
            if item is not None:
                await ready.put(item)
                await ready.join()  # one patch ahead of the trainer, never two: at most two claims held

    async def _prepare(self, claim: Claim) -> Ready | None:
        """The claim's patch, written and accepted; None (the claim released) when there is none."""
        ctx, hyp, parent = self.ctx, claim.hypothesis or {}, claim.parent or {}
        task = ImplementTask(program=self.program, contract=contract_text(), title=hyp.get("title", ""),
                             rationale=hyp.get("rationale", ""), intent=hyp.get("intent") or {},
                             parent_code=parent.get("code", ""))  # fmt: skip
        if claim.patch is not None:  # re-granted after its first holder died: its patch was accepted already
            return Ready(claim, self._job(claim, claim.patch["id"], claim.patch["code"]), task)
        ctx.say(f"implementing {hyp.get('title', claim.ref)!r}")
        try:
            code = (await ctx.brain.implement(task)).code  # type: ignore[union-attr]
        except CannotDo as exc:
            await self._give_up(claim, f"cannot implement: {exc}", done=True)
            return None
        except BrainError as exc:  # the model failed now; another agent may do better later
            await self._give_up(claim, f"the brain failed: {exc}", done=False)
            await asyncio.sleep(5)
            return None
        patch = await self._submit(claim, code, parent.get("id"))
        return Ready(claim, self._job(claim, patch, code), task) if patch else None

    async def _submit(self, claim: Claim, code: str, parent: str | None) -> str | None:
        ctx = self.ctx
        event = PatchSubmitted(by=ctx.spec.agent, patch=new_id("p"), arena=self.arena.id, hypothesis=claim.ref,
                               work=claim.work, parent=parent, code=code,
                               diff=unified_diff((claim.parent or {}).get("code", ""), code),
                               code_hash=_hash(code))  # fmt: skip
        verdict = await ctx.board.submit(event)
        if verdict.ok:
            return event.patch
        await self._give_up(claim, f"patch {verdict.status}: {verdict.reason}", done=True)
        return None

    def _job(self, claim: Claim, patch: str, code: str) -> Job:
        title = (claim.hypothesis or {}).get("title", "")
        return Job(patch, code, self.arena, claim.seed or 0, "explore", claim.work, title)

    async def _run(self, item: Ready) -> None:
        ctx, claim, job = self.ctx, item.claim, item.job
        result = await ctx.while_held(claim.claim, run_job(ctx, job))
        if result is None:
            return  # the claim was lost and its run cancelled: the work is someone else's now
        attempts = ctx.settings.agents.repair_attempts
        for attempt in range(1, attempts + 1):
            if result.status not in REPAIRABLE or ctx.stopping or not await self._may_rerun(claim):
                break
            fixed = await self._repair(claim, item.task, job, result, attempt)
            if fixed is None:
                break
            job = fixed
            if (repaired := await ctx.while_held(claim.claim, run_job(ctx, job))) is None:
                return
            result = repaired
        await ctx.release(claim.claim, done=True, reason=f"ran {job.patch}: {result.status}")
        ctx.count()

    async def _repair(self, claim: Claim, task: ImplementTask, job: Job, result: RunResult, attempt: int) -> Job | None:
        ctx = self.ctx
        ctx.say(f"repairing {job.patch} after {result.status} (attempt {attempt})")
        repair = RepairTask(**task.model_dump(), code=job.code, status=result.status, reason=result.reason,
                            log_tail=result.log_tail, attempt=attempt)  # fmt: skip
        try:
            fixed = await ctx.brain.repair(repair)  # type: ignore[union-attr]
        except BrainError as exc:
            log.warning("%s: repair of %s failed: %s", ctx.spec.agent, job.patch, exc)
            return None
        if fixed is None:
            return None
        event = PatchSubmitted(by=ctx.spec.agent, patch=new_id("p"), arena=self.arena.id, hypothesis=claim.ref,
                               work=job.work, parent=job.patch, code=fixed.code, diff=unified_diff(job.code, fixed.code),
                               code_hash=_hash(fixed.code))  # fmt: skip
        verdict = await ctx.board.submit(event)
        if not verdict.ok:
            log.info("%s: repaired patch refused: %s", ctx.spec.agent, verdict.reason)
            return None
        return Job(event.patch, fixed.code, job.arena, job.seed, job.purpose, job.work, f"{job.title} (repair {attempt})")

    async def _may_rerun(self, claim: Claim) -> bool:
        """A repair is one more run: it needs the board's leave under the claim (the run budget, the claim held)."""
        try:
            if await self.ctx.board.rerun(claim.claim):
                return True
        except BoardError as exc:
            log.warning("%s: no repair run for %s: %s", self.ctx.spec.agent, claim.claim, exc)
            return False
        self.ctx.say(f"no repair of {claim.ref}: the run budget is spent or the claim was lost")
        return False

    async def _give_up(self, claim: Claim, reason: str, done: bool) -> None:
        ctx = self.ctx
        ctx.say(reason)
        await ctx.release(claim.claim, done=done, reason=reason)
        if done:
            ctx.count()


def _hash(code: str) -> str:
    try:
        return code_hash(code)
    except BoardError:
        return ""  # code that does not parse: the service refuses it with the reason
