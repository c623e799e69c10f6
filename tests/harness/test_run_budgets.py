"""Budgets kept outside the agent's process: the runner serves the batches, counts and times them.

A train.py may patch every clock, rewrite `run`'s attributes and forge train.json: the tokens,
steps and training seconds of its result are still the runner's, a seconds budget still ends when
the runner says, and compute bought by reusing batches on a token budget is refused.
"""

from __future__ import annotations

import dataclasses

import pytest

from harness import tiers
from harness.runner import RunResult
from tests.harness.conftest import SMALL, SMALL_TRAIN

# One second of training, then at most one more for the export: anything longer is over budget.
SECONDS = tiers.Tier(name="test-seconds", budget_seconds=1.0, overrun_seconds=1.0, train_limit_seconds=90,
                     eval_limit_seconds=60, context_len=64, eval_batch=8, eval_tokens=4_096)  # fmt: skip

PATCH_CLOCKS = '''
import itertools as _i, time as _t
_ticks = _i.count(1)
_t.perf_counter = _t.monotonic = _t.time = lambda: next(_ticks) * 1e-6  # every clock says no time passes
'''


def with_prelude(prelude: str) -> str:
    """SMALL_TRAIN with `prelude` run at import, before train()."""
    return SMALL_TRAIN.replace("from harness.contract import Run\n", "from harness.contract import Run\n" + prelude, 1)


def wrap_train(body: str) -> str:
    """SMALL_TRAIN whose train(run) is replaced by `body` (which may call the original as _train)."""
    return SMALL_TRAIN.replace("def train(run: Run) -> nn.Module:", "def _train(run: Run) -> nn.Module:") + body


def test_the_result_counts_what_the_runner_served(small_baseline: RunResult) -> None:
    result = small_baseline  # the shrunk baseline's run, shared: a second identical run would prove nothing more
    assert result.status == "ok" and result.tokens == SMALL.budget_tokens
    assert result.steps == SMALL.budget_tokens // (8 * 64)  # BATCH_SIZE x SEQ_LEN of the shrunk baseline
    assert result.epochs is not None and 0 < result.epochs < 1 and result.cpu_seconds and result.cpu_seconds > 0
    assert result.tokens_per_second and result.training_seconds and result.mfu is None  # no GPU: MFU unknown


def test_forged_counters_and_batches_past_the_token_budget_change_nothing(run_small) -> None:  # type: ignore[no-untyped-def]
    """One run does both: asks for batches past the budget (refused where they are served), then forges its counters."""
    forger = wrap_train('''
def train(run):
    model = _train(run)
    got = 0
    for _ in range(50):  # ignore run.done(): ask for more anyway
        try:
            run.batch(8, 64)
            got += 1
        except Exception:
            pass
    print("extra batches:", got)
    run._state = (1, 1, 0.001, 10**9, 10**6)  # what run says about itself is not the record
    import json, pathlib
    pathlib.Path("train.json").write_text(json.dumps({"tokens": 1, "steps": 1, "training_seconds": 0.001}))
    return model
''')
    result = run_small(forger, guard=False)
    assert result.status == "ok", result.reason
    assert (result.tokens, result.steps) == (SMALL.budget_tokens, SMALL.budget_tokens // (8 * 64))
    assert result.training_seconds is not None and result.training_seconds > 0.01
    assert "extra batches: 0" in result.log_tail


@pytest.mark.slow
def test_training_seconds_are_the_runners_even_with_every_clock_patched(run_small) -> None:  # type: ignore[no-untyped-def]
    sleeper = wrap_train('''
def train(run):
    import time as _t
    model = _train(run)
    _t.sleep(1.5)  # real time passes; every clock says it does not
    return model
''').replace("import math\n", "import math\n" + PATCH_CLOCKS, 1)
    result = run_small(sleeper, guard=False)
    assert result.status == "ok", result.reason
    assert result.training_seconds is not None and result.training_seconds >= 1.5


@pytest.mark.slow
def test_training_on_batches_taken_early_past_a_seconds_budget_is_over_budget(run_small) -> None:  # type: ignore[no-untyped-def]
    hoarder = wrap_train('''
def train(run):
    kept = [run.batch(8, 64) for _ in range(4)]  # take batches early, then train long after the budget
    import time as _t
    _t.sleep(3.5)  # past the budget and its overrun (2 s in all) by 1.5 s
    return _train_on(kept)

def _train_on(batches):
    model = GPT(4096, 64)
    for x, y in batches:
        F.cross_entropy(model(x).view(-1, model(x).size(-1)), y.view(-1)).backward()
    return model
''').replace("import math\n", "import math\n" + PATCH_CLOCKS, 1)
    result = run_small(hoarder, SECONDS, guard=False)
    assert result.status == "over_budget", (result.status, result.reason)
    assert "over the budget of 1 s plus 1 s" in result.reason


@pytest.mark.slow
@pytest.mark.timeout(900)  # two real runs, one of them four times the compute
def test_reusing_each_batch_four_times_on_a_token_budget_is_over_budget(run_small) -> None:  # type: ignore[no-untyped-def]
    heavy = dataclasses.replace(SMALL, name="test-compute", budget_tokens=24_576, train_limit_seconds=600)
    baseline = run_small(SMALL_TRAIN, heavy)
    assert baseline.status == "ok" and baseline.cpu_seconds
    four_steps = SMALL_TRAIN.replace("        loss.backward()\n        for opt in optimisers:\n            opt.step()\n",
        "        for _ in range(4):\n            loss = F.cross_entropy(forward(x).float().view(-1, logits.size(-1)), y.view(-1))\n"
        "            loss.backward()\n            for opt in optimisers:\n                opt.step()\n"
        "            model.zero_grad(set_to_none=True)\n", 1)  # fmt: skip
    assert four_steps != SMALL_TRAIN
    cheat = run_small(four_steps, heavy, compute_budget=baseline.cpu_seconds)
    assert cheat.status == "over_budget" and "CPU-seconds" in cheat.reason, (cheat.status, cheat.reason)
