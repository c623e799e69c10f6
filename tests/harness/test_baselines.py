"""Every tier's baseline trains, exports and scores: the GPU baseline too, shrunk to run on a CPU.

The GPU baseline (harness/train_gpu.py) is never run for real by this suite (no GPU here), so the
GPU check's CPU dry run is what keeps its code path alive: its knobs are shrunk with the knob
editor the agents use, and the shrunk file goes through the real runner, the sandbox, the export
and the evaluation on the CPU.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agents import knobs
from harness import tiers

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from gpu_check import CPU_TIER, SHRINK  # noqa: E402


def test_each_tier_names_a_baseline_file_that_exists() -> None:
    for tier in tiers.TIERS.values():
        assert tier.baseline_path.is_file(), tier.name
    assert {tiers.get("standard").baseline, tiers.get("large").baseline} == {"train_gpu.py"}
    assert tiers.get("tiny").baseline == "train.py" and tiers.get("standard").vocab_size == 8192


def test_the_shrunk_gpu_baseline_differs_from_it_only_in_knobs() -> None:
    source = tiers.get("standard").baseline_path.read_text()
    assert knobs.changes(source, knobs.edit(source, SHRINK)) == SHRINK


def test_the_gpu_check_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_check")], check=True)


@pytest.mark.slow
def test_the_gpu_check_dry_run_trains_exports_and_scores_the_gpu_baseline_on_the_cpu() -> None:
    done = subprocess.run([str(ROOT / "scripts" / "gpu_check"), "--cpu"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = dict(line.split(None, 1) for line in done.stdout.split("---\n", 1)[1].splitlines())
    assert figures["status"] == "ok" and figures["mfu"] == "unknown"  # no GPU: no peak to compare with
    assert int(figures["tokens"]) == CPU_TIER.budget_tokens
    assert int(figures["steps"]) == CPU_TIER.budget_tokens // (SHRINK["DEVICE_BATCH"] * SHRINK["SEQ_LEN"])
    assert 0 < float(figures["epochs"]) < 1 and float(figures["tokens_per_second"]) > 0
    # An untrained model scores log2(8192) / ~3.4 bytes per token, about 3.8: it learned something.
    assert float(figures["val_bpb"]) < 3.7
