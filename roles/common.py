"""What several roles share: their programs, and running a patch on a device as recorded runs."""

from __future__ import annotations

import ast
import difflib
import logging
from functools import cache
from dataclasses import dataclass
from importlib import resources, util
from pathlib import Path

from agents.arena import ArenaInfo
from agents.devices import PRIORITY, DeviceSlot
from agents.runtime import Context
from blackboard.events import Purpose, RunFinished, RunStarted, new_id
from harness import runner, syntax, tiers
from harness.devices import device_of
from harness.runner import Progress, RunResult
from swarm.ground.errors import BoardError

log = logging.getLogger(__name__)


def program(role: str) -> str:
    """The role's program: roles/<role>.md, the instructions a person edits."""
    return resources.files("roles").joinpath(f"{role}.md").read_text()


@cache
def contract_text() -> str:
    """The harness contract as agents read it: the fixed part's own docstring. Read from its source,
    not imported: importing it loads torch (241 MiB, 2 s of CPU per agent), which the sim tier never needs."""
    spec = util.find_spec("harness.contract")
    assert spec is not None and spec.origin is not None, "harness.contract is part of the harness"
    return ast.get_docstring(syntax.parse(Path(spec.origin).read_text()), clean=False) or ""


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
    spec, slot = ctx.spec, ctx.spec.device or "cpu"
    device = device_of(slot)  # the slot (cpu#2) has its own lock; the run uses its device (cpu)
    run_id = new_id("r")
    tier = tiers.for_settings(job.arena.tier, ctx.settings.harness)
    ids = dict(run=run_id, patch=job.patch, arena=job.arena.id, work=job.work, seed=job.seed, purpose=job.purpose,
               tier=tier.name, device=slot, node=spec.node)  # fmt: skip
    what = f"{job.purpose} run of {job.patch} seed {job.seed}" + (f" ({job.title})" if job.title else "")
    ctx.say(f"waiting for {slot} for the {what}")
    async with DeviceSlot(spec.dir, slot, PRIORITY[job.purpose]):
        await ctx.board.publish(RunStarted(by=spec.agent, **ids))
        ctx.say(f"training the {what}")

        def progress(p: Progress) -> None:
            ctx.doing = f"training the {what}: step {p.step}, loss {p.loss:.3f}"
            if curve is not None:
                curve.append(p)

        result = await runner.run(job.code, tier, seed=job.seed, device=device, settings=ctx.settings.harness,
                                  runs_dir=spec.dir / "runs", on_progress=progress,
                                  compute_budget=await compute_budget(ctx, job, tier))  # fmt: skip
    await ctx.confirm_claims()  # a claim that expired while it trained: its result is not sent
    await ctx.board.publish(RunFinished(
        by=spec.agent, **ids, status=result.status, reason=result.reason or None, val_bpb=result.val_bpb,
        training_seconds=result.training_seconds, total_seconds=result.total_seconds, tokens=result.tokens,
        steps=result.steps, params=result.params, peak_memory_mb=result.peak_memory_mb, epochs=result.epochs,
        tokens_per_second=result.tokens_per_second, mfu=result.mfu, cpu_seconds=result.cpu_seconds,
        sandbox=result.sandbox, fingerprint=result.fingerprint,
        synthetic=result.synthetic, source_hash=result.source_hash, log_tail=result.log_tail[-4000:],
    ))  # fmt: skip
    score = f"val_bpb {result.val_bpb:.4f}" if result.val_bpb is not None else result.reason
    ctx.say(f"finished the {what}: {result.status}, {score}")
    return result


async def compute_budget(ctx: Context, job: Job, tier: tiers.Tier) -> float | None:
    """On a token tier, the median CPU seconds of the arena baseline's ok runs: the compute a
    candidate may use (times the tier's tolerance; see harness.budgets). None until the baseline ran,
    for the baseline itself, and on a seconds tier (the clock is the budget there)."""
    if tier.budget_tokens is None or tier.synthetic or job.patch == job.arena.baseline_patch:
        return None
    sql = (f"SELECT median(cpu_seconds) FROM runs WHERE arena = {_literal(job.arena.id)} "
           f"AND patch = {_literal(job.arena.baseline_patch)} AND status = 'ok' AND cpu_seconds IS NOT NULL")  # fmt: skip
    try:
        rows = (await ctx.board.query(sql, limit=1))["rows"]
    except BoardError as exc:
        log.warning("no compute budget for the %s (the run goes unchecked for compute): %s", job.patch, exc)
        return None
    value = rows[0][0] if rows and rows[0] else None
    return float(value) if isinstance(value, (int, float)) else None


def _literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
