"""Benchmark the harness on this machine: training tokens/s of the tiny tier and the seed spread.

    python scripts/bench_harness.py [--seeds 5] [--tier tiny] [--device cpu]

Runs the baseline train.py once per seed, exactly as `swarm harness run` does, and prints each
run, then tokens/s and the mean, std, min and max of val_bpb. The promotion rule compares gains
against this spread, so quote it with the arena (tier, hardware) it was measured on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import tiers  # noqa: E402
from harness.devices import hardware_class  # noqa: E402
from harness.runner import run_sync  # noqa: E402
from swarm.ground.settings import Settings  # noqa: E402

BASELINE = Path(__file__).resolve().parent.parent / "harness" / "train.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tier", default="tiny", choices=list(tiers.TIERS))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    settings = Settings.load()
    tier = tiers.get(args.tier)
    print(f"tier {tier.name} on {hardware_class(args.device)} ({args.device}), {args.seeds} seeds, baseline train.py")
    scores, speeds = [], []
    for seed in range(1, args.seeds + 1):
        result = run_sync(BASELINE.read_text(), tier, seed=seed, device=args.device, settings=settings.harness,
                          runs_dir=settings.dir / "runs")
        speed = (result.tokens or 0) / result.training_seconds if result.training_seconds else 0.0
        print(f"seed {seed}: {result.status} val_bpb {result.val_bpb} tokens/s {speed:,.0f} "
              f"training {result.training_seconds or 0:.1f} s total {result.total_seconds:.1f} s", flush=True)
        if result.status == "ok" and result.val_bpb is not None:
            scores.append(result.val_bpb)
            speeds.append(speed)
    if len(scores) < 2:
        sys.exit("fewer than two runs succeeded: no spread to report")
    print(f"training tokens/s: mean {statistics.mean(speeds):,.0f} (min {min(speeds):,.0f}, max {max(speeds):,.0f})")
    print(f"val_bpb over {len(scores)} seeds: mean {statistics.mean(scores):.5f} std {statistics.stdev(scores):.5f} "
          f"min {min(scores):.5f} max {max(scores):.5f} range {max(scores) - min(scores):.5f}")


if __name__ == "__main__":
    main()
