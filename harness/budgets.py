"""Budgets kept outside the agent's process, and the throughput figures of a run. FIXED.

=====================================================================================================
Every figure here comes from the runner's side of the boundary: the feeder (harness.feeder) counts
the tokens and batches it served and stamps the first batch and the end of training on the
runner's clock; the runner measures the CPU time of the run's processes from /proc. The rules:
  seconds budget  the training process may live at most `tier.overrun_seconds` past its budget
                  (counted from the first batch served to its exit): room for the export, not for
                  training on batches taken early. Past it: over_budget, with the figures.
  token budget    the feeder serves no batch past the budget. A train.py can still buy compute by
                  reusing batches (several optimiser steps per batch); against that, the CPU time
                  the run spends training (sampled from /proc by the runner, from the first batch
                  served to the end of training; start-up and export are the harness's) may be at
                  most `tier.compute_tolerance` times the arena baseline's (`compute_budget`, passed
                  by whoever knows the arena), else over_budget.
  epochs          tokens served / tokens in the training split: above 1, the run saw data twice.
  MFU             6 x parameters x tokens/s against the GPU's peak dense bf16 FLOP/s (the table
                  below, matched on the device's name); None where the GPU is not in the table or
                  the run was on a CPU. It leaves out attention's FLOPs: a lower bound.
=====================================================================================================
"""

from __future__ import annotations

from typing import Any

from harness.feeder import Counts, Feeder
from harness.tiers import Tier

PEAK_BF16_FLOPS = {  # dense, no sparsity; substrings of torch.cuda.get_device_name
    "H200": 989e12, "H100": 989e12, "H800": 989e12, "GH200": 989e12, "B200": 2250e12, "A100": 312e12,
    "A800": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12, "A10": 125e12, "RTX 4090": 165e12,
    "RTX 3090": 71e12, "V100": 125e12,
}  # fmt: skip


def served(feed: Feeder, ended: float) -> dict[str, Any]:
    """The run's official tokens, steps, seconds and throughput, from what the feeder served."""
    counts = feed.counts
    seconds = counts.training_seconds(ended)
    out: dict[str, Any] = dict(tokens=counts.tokens, steps=counts.batches, training_seconds=seconds,
                               epochs=counts.tokens / feed.n if feed.n else None)  # fmt: skip
    if seconds:
        out["tokens_per_second"] = counts.tokens / seconds
    if counts.first_batch is not None:
        out["overrun"] = ended - counts.first_batch  # first batch to the process's end
    return out


def judge(tier: Tier, training: dict[str, Any], compute_budget: float | None) -> dict[str, Any]:
    """The runner's verdict on the budget: {} when kept, else status over_budget and why."""
    if training.get("status") not in ("ok", None) or tier.synthetic:
        return {}
    lived = training.get("overrun")
    if tier.budget_seconds is not None and lived is not None and lived > tier.budget_seconds + tier.overrun_seconds:
        return {"status": "over_budget", "reason": (
            f"the training process lived {lived:.1f} s after its first batch, over the budget of "
            f"{tier.budget_seconds:.0f} s plus {tier.overrun_seconds:.0f} s for the export (by the runner's clock)")}
    cpu = training.get("cpu_seconds")
    if tier.budget_tokens is not None and compute_budget and cpu and cpu > tier.compute_tolerance * compute_budget:
        return {"status": "over_budget", "reason": (
            f"training took {cpu:.1f} CPU-seconds, over {tier.compute_tolerance:g} x the arena baseline's "
            f"{compute_budget:.1f}: on a token budget, compute bought by reusing batches does not count")}
    return {}


def mfu(params: int | None, tokens_per_second: float | None, hardware: str) -> float | None:
    peak = next((flops for name, flops in PEAK_BF16_FLOPS.items() if name in hardware), None)
    if not (peak and params and tokens_per_second):
        return None
    return 6 * params * tokens_per_second / peak


def training_cpu(samples: list[tuple[float, float]], counts: Counts, ended: float) -> float | None:
    """CPU seconds between the first batch and the end of training, from the runner's samples
    ((monotonic time, CPU seconds so far), every POLL_SECONDS): the last sample before each end."""
    if counts.first_batch is None or not samples:
        return None
    end = counts.trained if counts.trained is not None else ended

    def at(when: float) -> float:
        return max((cpu for t, cpu in samples if t <= when), default=0.0)

    return max(0.0, at(end) - at(counts.first_batch))
