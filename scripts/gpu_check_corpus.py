"""The GPU tiers' default corpus, measured: prepares it (download, tokenizer, tokens) and prints its figures.

    python scripts/gpu_check_corpus.py                          # into the usual cache (~/.cache/swarm)
    python scripts/gpu_check_corpus.py --cache-dir /tmp/fresh   # from nothing: the download timed too

Prints each preparation step with the seconds since the start, then the bytes and tokens of every
split, bytes per token, and the epochs a standard (300 s) and a large (1,800 s) run imply at a
training rate (default: train_gpu.py's ~50M parameters at 40% MFU on an H100, 6 x params FLOP a
token; pass the tokens/s that scripts/gpu_check measured to replace it). A cached corpus prints at
once; delete its directories (named in the output) to time it again. Each step shows wall and
CPU seconds (every thread of the process): on a busy machine the CPU seconds are the figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import prepare, tiers  # noqa: E402
from harness.budgets import PEAK_BF16_FLOPS  # noqa: E402
from harness.settings import HarnessSettings  # noqa: E402

BASELINE_PARAMS = 50e6  # train_gpu.py's model (harness/train_gpu.py's banner)
ASSUMED_MFU = 0.4  # the goal for the baseline on an H100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=HarnessSettings().cache_dir)
    parser.add_argument("--tier", default="standard", choices=[n for n, t in tiers.TIERS.items() if t.needs_gpu])
    parser.add_argument("--tokens-per-second", type=float,
                        default=ASSUMED_MFU * PEAK_BF16_FLOPS["H100"] / (6 * BASELINE_PARAMS))
    args = parser.parse_args()
    tier = tiers.get(args.tier)
    started, cpu = time.perf_counter(), time.process_time()

    def say(text: str) -> None:
        # CPU seconds of this process, all its threads: on a busy machine the wall clock says little.
        print(f"[{time.perf_counter() - started:7.1f} s, cpu {time.process_time() - cpu:7.1f} s] {text}", flush=True)

    say(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; corpus {tier.corpus}, vocabulary {tier.vocab_size}")
    ready = prepare.prepare("default", args.cache_dir, "bpe", say, default=tier.corpus, vocab=tier.vocab_size)
    say(f"ready: {ready.dir}")
    manifest = ready.manifest()
    print("---")
    for split in ("train", "val", "audit"):
        counts = manifest[split]
        print(f"{split:6s} {counts['documents']:8,d} documents {counts['bytes'] / 1e6:9.1f} MB {counts['tokens'] / 1e6:8.1f}M tokens")
    train = manifest["train"]
    print(f"bytes_per_token        {train['bytes'] / train['tokens']:.2f}")
    print(f"prepare_seconds        {time.perf_counter() - started:.1f} (cpu {time.process_time() - cpu:.1f})")
    print(f"tokens_per_second      {args.tokens_per_second:,.0f} (assumed; pass --tokens-per-second)")
    for name in ("standard", "large"):
        seconds = tiers.get(name).budget_seconds or 0.0
        print(f"epochs_{name:15s} {args.tokens_per_second * seconds / train['tokens']:.2f}  ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
