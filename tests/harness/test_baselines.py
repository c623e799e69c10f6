"""Every tier's baseline trains, exports and scores: the GPU baselines too, shrunk to run on a CPU.

The GPU baseline (harness/train_gpu.py) is never run for real by this suite (no GPU here), so this
test is what keeps its code path alive: its knobs are shrunk with the knob editor the agents use,
and the shrunk file goes through the real runner, worker, export and evaluation on the CPU.
"""

from __future__ import annotations

import pytest

from agents import knobs
from harness import tiers
from tests.harness.conftest import SMALL

# The GPU baseline at a CPU's scale: the same code, every size turned down, no compilation.
SHRUNK_GPU = dict(DEPTH=1, WIDTH=64, HEAD_DIM=32, SEQ_LEN=64, DEVICE_BATCH=4, TOTAL_BATCH_TOKENS=512,
                  COMPILE="never", LOG_EVERY=1)  # fmt: skip


def test_each_tier_names_a_baseline_file_that_exists() -> None:
    for tier in tiers.TIERS.values():
        assert tier.baseline_path.is_file(), tier.name
    assert {tiers.get("standard").baseline, tiers.get("large").baseline} == {"train_gpu.py"}
    assert tiers.get("tiny").baseline == "train.py"


@pytest.mark.slow
def test_the_gpu_baseline_shrunk_trains_exports_and_scores_on_the_cpu(run_small) -> None:  # type: ignore[no-untyped-def]
    source = tiers.get("standard").baseline_path.read_text()
    shrunk = knobs.edit(source, SHRUNK_GPU)
    assert knobs.changes(source, shrunk) == SHRUNK_GPU  # only knobs were turned: the code is the GPU code
    result = run_small(shrunk, SMALL)
    assert result.status == "ok", result.reason + result.log_tail
    assert result.tokens == SMALL.budget_tokens
    assert result.steps == SMALL.budget_tokens // (4 * 64)  # batches of 4 x 64 tokens, two per optimiser step
    # An untrained model scores ~3.72 here (uniform over 4,096 tokens of ~3.2 bytes): it learned something.
    assert result.val_bpb < 3.6
