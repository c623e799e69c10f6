"""What several roles share: their programs, and running a patch on a device as recorded runs."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources

from agents.arena import ArenaInfo
from agents.devices import PRIORITY, DeviceSlot
from agents.runtime import Context
from blackboard.events import Purpose, RunFinished, RunStarted, new_id
from harness import contract, runner, tiers
from harness.runner import Progress, RunResult


def program(role: str) -> str:
    """The role's program: roles/<role>.md, the instructions a person edits."""
    return resources.files("roles").joinpath(f"{role}.md").read_text()


def contract_text() -> str:
    """The harness contract as agents read it: the fixed part's own docstring."""
    return contract.__doc__ or ""


def unified_diff(parent: str, code: str) -> str:
    return "".join(difflib.unified_diff(parent.splitlines(True), code.splitlines(True), "a/train.py", "b/train.py"))


@dataclass(frozen=True)
class Job:
    """One run to do: which code, why, and where it is recorded."""

    patch: str
    code: str
    arena: ArenaInfo
    seed: int
    purpose: Purpose
    work: str | None
    title: str = ""


async def run_job(ctx: Context, job: Job, curve: list[Progress] | None = None) -> RunResult:
    """Train and score `job` on this agent's device; RunStarted and RunFinished say so on the board.
    `curve` collects its progress reports (a repair reads the loss curve)."""
    spec, device = ctx.spec, ctx.spec.device or "cpu"
    run_id = new_id("r")
    tier = tiers.for_settings(job.arena.tier, ctx.settings.harness)
    ids = dict(run=run_id, patch=job.patch, arena=job.arena.id, work=job.work, seed=job.seed, purpose=job.purpose,
               tier=tier.name, device=device, node=spec.node)  # fmt: skip
    what = f"{job.purpose} run of {job.patch} seed {job.seed}" + (f" ({job.title})" if job.title else "")
    ctx.say(f"waiting for {device} for the {what}")
    async with DeviceSlot(spec.dir, device, PRIORITY[job.purpose]):
        await ctx.board.publish(RunStarted(by=spec.agent, **ids))
        ctx.say(f"training the {what}")

        def progress(p: Progress) -> None:
            ctx.doing = f"training the {what}: step {p.step}, loss {p.loss:.3f}"
            if curve is not None:
                curve.append(p)

        result = await runner.run(job.code, tier, seed=job.seed, device=device, settings=ctx.settings.harness,
                                  runs_dir=spec.dir / "runs", on_progress=progress)  # fmt: skip
    await ctx.board.publish(RunFinished(
        by=spec.agent, **ids, status=result.status, reason=result.reason or None, val_bpb=result.val_bpb,
        training_seconds=result.training_seconds, total_seconds=result.total_seconds, tokens=result.tokens,
        steps=result.steps, params=result.params, peak_memory_mb=result.peak_memory_mb, fingerprint=result.fingerprint,
        synthetic=result.synthetic, source_hash=result.source_hash, log_tail=result.log_tail[-4000:],
    ))  # fmt: skip
    score = f"val_bpb {result.val_bpb:.4f}" if result.val_bpb is not None else result.reason
    ctx.say(f"finished the {what}: {result.status}, {score}")
    return result
