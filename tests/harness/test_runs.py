"""Real runs of the baseline: the tiny tier's acceptance, determinism, the seconds budget, compile."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from harness import tiers
from harness.runner import RunResult
from tests.harness.conftest import SMALL, SMALL_TRAIN, set_knobs


@pytest.mark.slow
@pytest.mark.timeout(900)  # the real tiny tier: about a minute alone, over 300 s beside a busy core
def test_tiny_baseline_trains_well_below_the_untrained_score(tiny_baseline: RunResult, prepared) -> None:
    result = tiny_baseline
    assert result.status == "ok", result.reason + result.log_tail
    manifest = prepared.manifest()
    # An untrained model predicts uniformly: log2(vocab) bits per token, over the bytes per token.
    untrained = math.log2(prepared.vocab_size) * manifest["val"]["tokens"] / manifest["val"]["bytes"]
    assert result.val_bpb is not None and result.val_bpb < 0.75 * untrained
    assert result.tokens == tiers.get("tiny").budget_tokens
    assert result.params and result.params > 100_000 and result.peak_memory_mb and result.steps
    assert result.fingerprint and result.source_hash and not result.synthetic


def test_same_seed_same_score_other_seed_other_score(run_small, small_baseline: RunResult) -> None:
    again = run_small(SMALL_TRAIN)
    other = run_small(SMALL_TRAIN, seed=2)
    assert small_baseline.status == again.status == other.status == "ok"
    assert again.val_bpb == small_baseline.val_bpb
    assert other.val_bpb != small_baseline.val_bpb


def test_seconds_budget_stops_on_time(run_small) -> None:
    timed = tiers.Tier(name="test-seconds", budget_seconds=1.0, train_limit_seconds=60, eval_limit_seconds=60,
                       context_len=64, eval_batch=8, eval_tokens=4_096)  # fmt: skip
    result = run_small(SMALL_TRAIN, timed)
    assert result.status == "ok", result.reason
    assert 1.0 <= result.training_seconds < 1.0 + 10  # it stops at the budget (a step takes milliseconds), long before the 60 s limit
    assert result.tokens and result.tokens % (8 * 64) == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_cuda_path_compiles_and_exports_on_cpu(run_small) -> None:
    """The compile branch taken on GPUs works from the same file (forced on here).

    Compiling takes about 45 s alone and went past 90 s beside the other test worker in CI: this run
    gets a generous limit of its own, since it checks that compiling works, not how fast."""
    source = set_knobs(SMALL_TRAIN, COMPILE="always")
    result = run_small(source, replace(SMALL, train_limit_seconds=600))
    assert result.status == "ok", result.reason + result.log_tail
    assert result.val_bpb is not None and math.isfinite(result.val_bpb)


def test_a_model_that_cannot_be_exported_is_a_crash_with_the_reason(run_small) -> None:
    source = SMALL_TRAIN.replace("\n    return model\n", "\n    return 'not a model'\n")
    result = run_small(source)
    assert result.status == "crash" and "must return a torch.nn.Module" in result.reason
    assert result.tokens == SMALL.budget_tokens  # the training metrics survive the failure
