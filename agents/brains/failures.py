"""What a repair needs to know about a failed run: the facts that matter for its kind of failure.

A crash needs its whole traceback; an out-of-memory run the memory it used and the cap; a timeout
the steps it reached against the time limit; a divergence its loss curve. All of them say how far
the run got. The traceback comes from the run's whole log (`train.log` in its run directory), not
the last lines kept on the board.
"""

from __future__ import annotations

from pathlib import Path

from harness.runner import LOG_FILE, Progress, RunResult
from harness.tiers import Tier

MAX_TRACEBACK = 8000  # characters of a traceback kept: its end, where the error is
CURVE_POINTS = 12  # loss-curve points shown, evenly spread over the run


def facts(result: RunResult, curve: list[Progress], tier: Tier, memory_cap_mb: int) -> str:
    """The failure in lines a research engineer would read first."""
    lines = [f"status: {result.status}", f"reason: {result.reason or 'none given'}"]
    if result.steps is not None or curve:
        lines.append(f"steps reached: {result.steps if result.steps is not None else curve[-1].step}")
    if result.training_seconds is not None or result.status == "timeout":
        took = f"{result.training_seconds:.1f} s" if result.training_seconds is not None else "unknown"
        lines.append(f"training time: {took}; the training process's hard limit: {tier.train_limit_seconds:g} s")
    if result.status == "oom" or result.peak_memory_mb is not None:
        used = f"{result.peak_memory_mb:.0f} MB" if result.peak_memory_mb is not None else "unknown"
        lines.append(f"peak memory: {used}; the memory cap: {memory_cap_mb} MB")
    if curve:
        step = max(1, len(curve) // CURVE_POINTS)
        points = curve[::step][: CURVE_POINTS - 1] + [curve[-1]]
        lines.append("loss curve (step: loss): " + ", ".join(f"{p.step}: {p.loss:.4g}" for p in points))
    if (trace := traceback(result)) is not None:
        lines.append(f"the whole traceback:\n{trace}")
    return "\n".join(lines)


def traceback(result: RunResult) -> str | None:
    """The last traceback in the run's whole log, or None when there is none (or no log)."""
    try:
        text = (Path(result.run_dir) / LOG_FILE).read_text(errors="replace")
    except OSError:
        text = result.log_tail
    start = text.rfind("Traceback (most recent call last):")
    if start < 0:
        return None
    return text[start:].strip()[-MAX_TRACEBACK:]
