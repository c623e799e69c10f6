"""The pre-flight smoke run: does a train.py survive one step on the CPU? FIXED, do not modify.

=====================================================================================================
Before a patch costs a device run, the implementer checks it here: the guard's static checks, then
the real runner on a smoke tier derived from the run's tier, on the CPU: a budget of one token, so
train.py draws one batch (a forward and a backward pass), exports its model, and the evaluation
scores one window. The same worker and the same limits' kind as a real run, so what fails here
would fail there; what passes can still run out of memory or diverge at full length.

A synthetic tier never runs train.py: its smoke check is the simulation's own reading of the knobs
(a file that does not parse, a missing or non-numeric knob), which is what crashes a sim run.
=====================================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from harness import guard, runner, sim
from harness.knobs import KnobError, read
from harness.settings import HarnessSettings
from harness.tiers import Tier

SMOKE_TRAIN_SECONDS = 180.0  # start-up, one step and the export of the model at its real shape, on a busy CPU
SMOKE_EVAL_SECONDS = 120.0


@dataclass(frozen=True)
class Smoke:
    ok: bool
    status: str  # ok, rejected (the guard), crash, timeout, oom...
    reason: str = ""
    log_tail: str = ""

    def report(self, limit: int = 3000) -> str:
        """What went wrong, for the model that wrote the code: the status, the reason, the log's end."""
        tail = self.log_tail[-limit:].strip()
        return f"{self.status}: {self.reason}" + (f"\nThe end of its log:\n{tail}" if tail else "")


def smoke_tier(tier: Tier) -> Tier:
    """`tier` cut to one batch of training and one window of evaluation, with the same corpus and baseline."""
    return replace(tier, name=f"{tier.name}-smoke", budget_tokens=1, budget_seconds=None,
                   train_limit_seconds=SMOKE_TRAIN_SECONDS, eval_limit_seconds=SMOKE_EVAL_SECONDS, eval_batch=1,
                   eval_tokens=tier.context_len)  # fmt: skip


async def check(source: str, tier: Tier, settings: HarnessSettings | None = None, runs_dir: Path | None = None) -> Smoke:
    """The guard, then one step, the export and one evaluation window on the CPU (or the sim's reading)."""
    report = guard.check_source(source)
    if not report.ok:
        return Smoke(False, "rejected", report.reason)
    if tier.synthetic:
        try:
            sim.loss(read(source), read(sim.BASELINE.read_text()))
        except (sim.SimError, KnobError) as exc:
            return Smoke(False, "crash", f"synthetic: {exc}")
        except ArithmeticError:
            pass  # a diverging knob is a result, not a broken file
        return Smoke(True, "ok")
    result = await runner.run(source, smoke_tier(tier), seed=0, device="cpu", settings=settings, runs_dir=runs_dir)
    return Smoke(result.status == "ok", result.status, result.reason or "", result.log_tail)
