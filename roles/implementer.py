"""The implementer: turns an approved hypothesis into a patch, runs it, publishes the result.
It also ports winners of the rung below (or restacks its own rung's) onto its arena's best
(agents.transfer); that patch is not run here: the board queues its replications.

It prepares its next patch while the current run trains (two tasks and a queue of one), so its
device never waits for the brain. A patch is submitted only after it passes the pre-flight
(harness.smoke: the guard, then one step, the export and one evaluation window on the CPU); an LLM
brain gets the failure back in the same conversation, up to a limit, before any device time. A
run that crashed, ran out of memory or time, or diverged is repaired with the facts of its failure
(agents.brains.failures) in one conversation per hypothesis, at most `agents.repair_attempts`
times; every attempt is a recorded run. A hypothesis whose implementation fails
`agents.implement_failures` times, by any agent, is given up with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agents.arena import describe_async, open_arena
from agents.brains import failures
from agents.brains.base import Brain, BrainError, CannotDo, ImplementTask, PreflightFailed, RepairTask
from agents.runtime import Role
from agents.transfer import NotPortable, port
from blackboard.client import Board, Claim
from blackboard.events import PatchSubmitted, PortMethod, TransferPorted, new_id
from blackboard.rules import code_hash
from blackboard.state import REPAIRABLE
from harness import smoke, tiers
from harness.runner import Progress, RunResult, memory_cap_mb
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
            claim = await ctx.claim(["transfer", "implement"], [self.arena.id], wait=10)
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
        if claim.kind == "transfer":
            await self._transfer(claim)
            return None
        task = ImplementTask(program=self.program, contract=contract_text(), title=hyp.get("title", ""),
                             rationale=hyp.get("rationale", ""), intent=hyp.get("intent") or {},
                             parent_code=parent.get("code", ""))  # fmt: skip
        if claim.patch is not None:  # re-granted after its first holder died: its patch was accepted already
            return Ready(claim, self._job(claim, claim.patch["id"], claim.patch["code"]), task)
        ctx.say(f"implementing {hyp.get('title', claim.ref)!r}")
        try:
            done = await ctx.brain.implement(task, self._preflight)  # type: ignore[union-attr]
            code = done.code
            if not done.checked and (problem := await self._preflight(code)) is not None:
                await self._give_up(claim, f"the patch fails the pre-flight: {problem[:1000]}", done=True)
                return None
        except CannotDo as exc:
            await self._give_up(claim, f"cannot implement: {exc}", done=True)
            return None
        except PreflightFailed as exc:  # the model had its chances: another try would cost the same
            await self._give_up(claim, f"given up: {exc}", done=True)
            return None
        except BrainError as exc:  # the model failed now; another agent may do better later, K times in all
            failed = await self._failures(claim) + 1
            limit = ctx.settings.agents.implement_failures
            if failed >= limit:
                await self._give_up(claim, f"given up after {failed} failed implementations: {exc}", done=True)
            else:
                await self._give_up(claim, f"the brain failed ({failed} of {limit}): {exc}", done=False)
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

    async def _preflight(self, code: str) -> str | None:
        """The harness's smoke check of `code` on the CPU (harness.smoke): None when it passes, else what failed."""
        self.ctx.say("pre-flight: the guard, then one step, the export and one evaluation window on the CPU")
        tier = tiers.for_settings(self.arena.tier, self.ctx.settings.harness)
        found = await smoke.check(code, tier, self.ctx.settings.harness, runs_dir=self.ctx.spec.dir / "smoke")
        return None if found.ok else found.report()

    async def _transfer(self, claim: Claim) -> None:
        """Re-apply the claim's change to this arena's best and submit it, or say why it cannot be."""
        ctx = self.ctx
        ctx.say(f"re-applying {(claim.hypothesis or {}).get('title', claim.ref)!r} to {self.arena.id}'s best")
        by_brain = self._port_by_brain if ctx.settings.brain.kind != "offline" else None  # a model may port what a merge cannot
        ported = await port_transfer(ctx.board, ctx.spec.agent, claim, by_brain)
        ctx.say(f"re-applied {ported.source} as {ported.patch} ({ported.method})" if ported.patch
                else f"cannot re-apply {ported.source}: {ported.reason[:200]}")  # fmt: skip
        await ctx.release(claim.claim, done=True, reason=f"transfer: {ported.patch or ported.reason[:200]}")
        ctx.count()

    async def _port_by_brain(self, plan: dict[str, Any], title: str, conflict: str) -> str | None:
        return await port_by_brain(self.ctx.brain, self.program, plan, title, conflict)  # type: ignore[arg-type]

    def _job(self, claim: Claim, patch: str, code: str) -> Job:
        title = (claim.hypothesis or {}).get("title", "")
        return Job(patch, code, self.arena, claim.seed or 0, "explore", claim.work, title)

    async def _run(self, item: Ready) -> None:
        ctx, claim, job = self.ctx, item.claim, item.job
        curve: list[Progress] = []
        result = await ctx.while_held(claim.claim, run_job(ctx, job, curve))
        if result is None:
            return  # the claim was lost and its run cancelled: the work is someone else's now
        attempts = ctx.settings.agents.repair_attempts
        thread: list[dict[str, str]] = []  # one repair conversation per hypothesis: each attempt sees the earlier ones
        for attempt in range(1, attempts + 1):
            if result.status not in REPAIRABLE or ctx.stopping or not await self._may_rerun(claim):
                break
            fixed = await self._repair(claim, item.task, job, result, attempt, curve, thread)
            if fixed is None:
                break
            job, curve = fixed, []
            if (repaired := await ctx.while_held(claim.claim, run_job(ctx, job, curve))) is None:
                return
            result = repaired
        await ctx.release(claim.claim, done=True, reason=f"ran {job.patch}: {result.status}")
        ctx.count()

    async def _repair(self, claim: Claim, task: ImplementTask, job: Job, result: RunResult, attempt: int,
                      curve: list[Progress], thread: list[dict[str, str]]) -> Job | None:  # fmt: skip
        ctx = self.ctx
        ctx.say(f"repairing {job.patch} after {result.status} (attempt {attempt})")
        tier = tiers.for_settings(self.arena.tier, ctx.settings.harness)
        repair = RepairTask(**task.model_dump(), code=job.code, status=result.status, reason=result.reason,
                            log_tail=result.log_tail, attempt=attempt,
                            facts=failures.facts(result, curve, tier, memory_cap_mb(ctx.settings.harness)))  # fmt: skip
        try:
            fixed = await ctx.brain.repair(repair, self._preflight, thread)  # type: ignore[union-attr]
        except BrainError as exc:
            log.warning("%s: repair of %s failed: %s", ctx.spec.agent, job.patch, exc)
            return None
        if fixed is None:
            return None
        event = repair_patch(ctx.spec.agent, self.arena.id, claim, job, fixed.code)
        verdict = await ctx.board.submit(event)
        if not verdict.ok:
            log.info("%s: repaired patch refused: %s", ctx.spec.agent, verdict.reason)
            return None
        return Job(event.patch, fixed.code, job.arena, job.seed, job.purpose, job.work, f"{task.title} (repair {attempt})")

    async def _failures(self, claim: Claim) -> int:
        """How often this hypothesis' implementation failed before, by any agent: claims released undone."""
        ref = claim.ref.replace("'", "''")
        found = await self.ctx.board.query("SELECT count(*) FROM claims c JOIN work w USING (work) WHERE "
                                           f"w.ref = '{ref}' AND c.status = 'released' AND NOT c.done")  # fmt: skip
        return int(found["rows"][0][0])

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


def repair_patch(by: str, arena: str, claim: Claim, job: Job, code: str) -> PatchSubmitted:
    """A repaired patch, submitted as an edit of the hypothesis's parent: what was accepted before.

    Its parent and diff are not the crashed attempt's, so the review judges everything the repair
    adds to accepted code, including what the crashed attempt had added (a seed, a file read).
    """
    parent = claim.parent or {}
    return PatchSubmitted(by=by, patch=new_id("p"), arena=arena, hypothesis=claim.ref, work=job.work,
                          parent=parent.get("id"), code=code, diff=unified_diff(parent.get("code", ""), code),
                          code_hash=_hash(code))  # fmt: skip

PortByBrain = Callable[[dict[str, Any], str, str], Awaitable[str | None]]  # (plan, title, why not) -> code


async def port_transfer(board: Board, agent: str, claim: Claim, by_brain: PortByBrain | None = None) -> TransferPorted:
    """A transfer claim done: its change re-applied to its arena's best (agents.transfer, else the
    brain) and submitted, then TransferPorted published with the patch, or with why there is none."""
    plan = claim.transfer or {}
    onto, title = plan["onto"], (claim.hypothesis or {}).get("title", plan["source"])
    method: PortMethod | None = None
    try:
        ported = port(plan["base"]["code"], plan["change"]["code"], onto["code"])
        code, method, reason = ported.code, ported.method, ""  # type: ignore[assignment]
    except NotPortable as exc:
        code, reason = None, str(exc)
        if by_brain is not None and (code := await by_brain(plan, title, reason)) is not None:
            method = "brain"
    patch = None
    if code is not None:
        event = PatchSubmitted(by=agent, patch=new_id("p"), arena=claim.arena, hypothesis=plan["hypothesis"], work=claim.work,
                               parent=onto["id"], code=code, diff=unified_diff(onto["code"], code), code_hash=_hash(code))  # fmt: skip
        verdict = await board.submit(event)
        patch, reason = event.patch, "" if verdict.ok else f"patch {verdict.status}: {verdict.reason}"
    done = TransferPorted(by=agent, work=claim.work, source=plan["source"], arena=claim.arena, patch=patch,
                          method=method, reason=reason)  # fmt: skip
    await board.publish(done)
    return done


async def port_by_brain(brain: Brain, instructions: str, plan: dict[str, Any], title: str, conflict: str) -> str | None:
    """The change ported by a brain, from the winner's diff and why the merge failed; None when it cannot."""
    diff = unified_diff(plan["base"]["code"], plan["change"]["code"])
    task = ImplementTask(program=instructions, contract=contract_text(), title=f"port: {title}",
                         rationale=f"This change won on another rung or an older parent. Re-apply its idea to this "
                                   f"code; a mechanical merge failed:\n{conflict}\n\nThe change:\n{diff}",
                         intent={}, parent_code=plan["onto"]["code"])  # fmt: skip
    try:
        return (await brain.implement(task)).code
    except BrainError as exc:
        log.warning("the brain could not port %s: %s", plan["source"], exc)
        return None


def _hash(code: str) -> str:
    try:
        return code_hash(code)
    except BoardError:
        return ""  # code that does not parse: the service refuses it with the reason
