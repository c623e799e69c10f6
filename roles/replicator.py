"""The replicator: re-runs candidates (and the arena's baseline) with other seeds, so the
blackboard's promotion rule can tell a real gain from noise. It needs a device, not a brain.

It also audits the arena's promoted bests, when it has nothing of the search to run: the best's
code is run once more and its model scored on the audit split (harness.runner, split="audit"), and
the score goes to the board as an AuditScored, which no agent reads. No RunStarted or RunFinished:
an audit run is not a measurement of the search, so it adds no seed to the best's statistics.
"""

from __future__ import annotations

from pathlib import Path

from agents.arena import describe_async, open_arena
from agents.devices import PRIORITY, DeviceSlot
from agents.runtime import Role
from blackboard.client import Board, Claim
from blackboard.events import AuditScored
from harness import runner, tiers
from harness.devices import device_of
from harness.settings import HarnessSettings
from roles.common import Job, run_job

KINDS = ["baseline", "replicate", "promote", "audit"]  # in this order: an audit waits for the search's runs


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
        claim: Claim | None = None  # the next work, handed over with the last one's release
        while not ctx.stopping:
            ctx.say("waiting for a baseline or a candidate to replicate")
            # each kind of work it claims is also the purpose its run is recorded with
            claim = claim or await ctx.claim(KINDS, [arena.id], wait=10)
            if claim is None or claim.patch is None:
                claim = None
                continue
            ctx.heartbeat.hold(claim.claim)
            if claim.kind == "audit":
                slot = ctx.spec.device or "cpu"
                ctx.say(f"auditing the best {claim.ref} on {slot}")  # never its score: this line is shown to all
                async with DeviceSlot(ctx.spec.dir, slot, PRIORITY["replicate"]):
                    scored = await ctx.while_held(claim.claim, audit(ctx.board, ctx.spec.agent, claim, arena.tier, slot,
                                                                     ctx.settings.harness, ctx.spec.dir / "runs"))  # fmt: skip
                done = claim
                claim = None
                if scored is not None:
                    claim = await ctx.release_and_claim(done.claim, True, f"audit of {done.ref}: {scored.status}",
                                                        KINDS, [arena.id])  # fmt: skip
                continue
            title = (claim.hypothesis or {}).get("title", "baseline" if claim.kind == "baseline" else "")
            job = Job(claim.patch["id"], claim.patch["code"], arena, claim.seed or 0, claim.kind,  # type: ignore[arg-type]
                      claim.work, title)  # fmt: skip
            result = await ctx.while_held(claim.claim, run_job(ctx, job))
            done, claim = claim, None
            if result is None:
                continue  # the claim was lost and its run cancelled: the work is someone else's now
            ctx.count()
            claim = await ctx.release_and_claim(done.claim, True, f"{done.kind} seed {job.seed}: {result.status}",
                                                KINDS, [arena.id])  # fmt: skip


async def audit(board: Board, agent: str, claim: Claim, tier: str, slot: str, settings: HarnessSettings,
                runs_dir: Path) -> AuditScored:  # fmt: skip
    """Run an audit work's patch on `slot` and publish its score on the audit split."""
    code = (claim.patch or {})["code"]
    result = await runner.run(code, tiers.for_settings(tier, settings), seed=claim.seed or 0, device=device_of(slot),
                              settings=settings, runs_dir=runs_dir, split="audit")  # fmt: skip
    scored = AuditScored(by=agent, patch=claim.ref, arena=claim.arena, status=result.status, val_bpb=result.val_bpb,
                         reason=result.reason, work=claim.work, seed=claim.seed or 0)  # fmt: skip
    await board.publish(scored)
    return scored
