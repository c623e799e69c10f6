"""The synthetic tier: "training" as a known noisy function of train.py's knobs. FIXED.

=====================================================================================================
For benchmarks and tests of coordination only: it never imports torch nor runs train.py. It
reads the knobs (harness.knobs: UPPER_CASE constants that are plain literals) of the candidate and of the baseline harness/train.py,
waits the tier's duration, and reports

    val_bpb = FLOOR + sum over the baseline's numeric knobs of weight(k) * distance(k)^2 + noise

distance is measured in log space around an optimum derived from the knob's name and baseline
value (within a factor of 2 of the baseline, so the baseline is not optimal and there is something
to find); knobs whose baseline is 0 are measured linearly. Another sim tier (`sim-large`, the upper
rung of the sim ladder) moves the optimum of about half the knobs (SHIFTED), chosen and placed by
its name: correlated with `sim`'s optimum but not the same, so some of sim's winners transfer and
some do not. The noise is Gaussian, seeded by
(seed, sha256 of the source), so a rerun of the same code and seed is identical; the audit split's
score (split="audit") is the same function with its own noise draw, as another held-out sample
would be. A knob that is
non-positive where the baseline is positive, or far off (x100), diverges; a missing or non-numeric
knob, or a file that does not parse, crashes. Every result is labelled synthetic.
=====================================================================================================
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from harness.knobs import Knob, KnobError, read
from harness.procs import die_with_parent

BASELINE = Path(__file__).resolve().parent / "train.py"
FLOOR = 1.5  # the best reachable synthetic val_bpb (plus noise)
NOISE = 0.004  # standard deviation of the seed noise: about what a small GPU tier shows
SPREAD = math.log(2.0)  # optima lie within a factor of 2 of the baseline's value
DIVERGE = math.log(100.0)  # farther than x100 from the optimum: the run diverges
SHIFTED = 0.5  # share of the knobs whose optimum another sim tier moves

class SimError(ValueError):
    """The candidate cannot be simulated: reported as a crash."""


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from its arguments."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _numeric(name: str, value: Knob) -> dict[str, float]:
    """A knob as named numbers: tuples become NAME[0], NAME[1] ...; bools and strings are skipped."""
    if isinstance(value, bool) or isinstance(value, str):
        return {}
    if isinstance(value, (int, float)):
        return {name: float(value)}
    if isinstance(value, tuple):
        out: dict[str, float] = {}
        for i, item in enumerate(value):
            out.update(_numeric(f"{name}[{i}]", item))
        return out
    return {}


def _optimum(key: str, tier: str) -> float:
    """Where the knob's optimum lies, in [0, 1): `sim`'s, or for a shifted knob of another tier, its own."""
    if tier != "sim" and _unit("shifted", tier, key) < SHIFTED:
        return _unit("optimum", key, tier)
    return _unit("optimum", key)


def loss(candidate: dict[str, Knob], baseline: dict[str, Knob], tier: str = "sim") -> float:
    """The noise-free synthetic val_bpb on `tier`; SimError for a crash, ArithmeticError for a divergence."""
    total = FLOOR
    for name, base_value in baseline.items():
        base = _numeric(name, base_value)
        if not base:
            continue
        if name not in candidate:
            raise SimError(f"knob {name} is missing")
        got = _numeric(name, candidate[name])
        if set(got) != set(base):
            raise SimError(f"knob {name} = {candidate[name]!r} is not a number like the baseline's {base_value!r}")
        for key, b in base.items():
            v = got[key]
            weight = 0.01 + 0.05 * _unit("weight", key)
            if b > 0:
                if v <= 0:
                    raise ArithmeticError(f"{key} = {v} must be positive")
                distance = math.log(v / b) - SPREAD * (2 * _optimum(key, tier) - 1)
                if abs(distance) > DIVERGE:
                    raise ArithmeticError(f"{key} = {v} is far outside any stable range")
            else:
                if v < 0:
                    raise ArithmeticError(f"{key} = {v} must not be negative")
                distance = (v - 0.05 * _optimum(key, tier)) / 0.1
            total += weight * distance**2
    return total


def simulate(source: str, seed: int, baseline_source: str | None = None, tier: str = "sim",
             split: str = "val") -> dict[str, Any]:
    """The record the runner reads: status, reason, val_bpb (noise included) on `split`, synthetic."""
    baseline = read(baseline_source if baseline_source is not None else BASELINE.read_text())
    try:
        value = loss(read(source), baseline, tier)
    except (SimError, KnobError) as exc:
        return {"status": "crash", "reason": f"synthetic: {exc}", "synthetic": True}
    except ArithmeticError as exc:
        return {"status": "diverged", "reason": f"synthetic: {exc}", "synthetic": True}
    code = hashlib.sha256(source.encode()).hexdigest()
    draw = f"{seed}:{code}" if split == "val" else f"{split}:{seed}:{code}"  # val keeps its historical draw
    noise = random.Random(draw).gauss(0.0, NOISE)
    return {"status": "ok", "reason": "", "val_bpb": value + noise, "synthetic": True}


def main() -> None:
    spec = json.loads(sys.stdin.read())
    die_with_parent(spec["runner_pid"])
    run_dir = Path(spec["run_dir"])
    duration = float(spec["budget_seconds"])
    record = simulate((run_dir / "train.py").read_text(), int(spec["seed"]), tier=str(spec.get("tier", "sim")),
                      split=str(spec.get("split", "val")))
    started = time.perf_counter()
    steps = 10
    for step in range(steps):  # progress as a real run would report it, so views look alike
        time.sleep(duration / steps)
        fake = 8.0 - (8.0 - record.get("val_bpb", 8.0)) * (step + 1) / steps
        line = json.dumps({"step": step, "loss": fake, "tokens": 0, "elapsed": time.perf_counter() - started})
        try:
            os.write(spec["progress_fd"], (line + "\n").encode())
        except OSError:
            pass
    record.update(training_seconds=time.perf_counter() - started, steps=steps, tokens=0)
    (run_dir / "train.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
