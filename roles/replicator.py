"""The replicator: re-runs candidates (and the arena's baseline) with other seeds, so the
blackboard's promotion rule can tell a real gain from noise. It needs a device, not a brain."""

from __future__ import annotations

from agents.arena import describe_async, open_arena
from agents.runtime import Role
from roles.common import Job, run_job


class Replicator(Role):
    name = "replicator"
    uses_brain = False
    needs_device = True
    slots_from_last = True

    async def run(self) -> None:
        ctx = self.ctx
        ctx.say("preparing the data and opening the arena")
        arena = await describe_async(ctx.settings.harness.tier, ctx.spec.device or "cpu", ctx.settings.harness)
        await open_arena(ctx.board, arena)
        while not ctx.stopping:
            ctx.say("waiting for a baseline or a candidate to replicate")
            # each kind of work it claims is also the purpose its run is recorded with
            claim = await ctx.claim(["baseline", "replicate", "promote"], [arena.id], wait=10)
            if claim is None or claim.patch is None:
                continue
            ctx.heartbeat.hold(claim.claim)
            title = (claim.hypothesis or {}).get("title", "baseline" if claim.kind == "baseline" else "")
            job = Job(claim.patch["id"], claim.patch["code"], arena, claim.seed or 0, claim.kind,  # type: ignore[arg-type]
                      claim.work, title)  # fmt: skip
            result = await ctx.while_held(claim.claim, run_job(ctx, job))
            if result is None:
                continue  # the claim was lost and its run cancelled: the work is someone else's now
            await ctx.release(claim.claim, done=True, reason=f"{claim.kind} seed {job.seed}: {result.status}")
            ctx.count()
