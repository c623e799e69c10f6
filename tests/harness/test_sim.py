"""The synthetic tier: a known noisy function of the knobs, deterministic, labelled synthetic."""

from __future__ import annotations

import math
from pathlib import Path

from harness import sim
from harness import tiers
from harness.knobs import read as read_knobs
from harness.settings import HarnessSettings
from tests.harness.conftest import BASELINE, set_knobs

FAST_SIM = tiers.get("sim").with_duration(0.2)


def test_knobs_are_the_upper_case_literals() -> None:
    knobs = read_knobs(BASELINE)
    assert knobs["DEPTH"] == 4 and knobs["ADAM_BETAS"] == (0.8, 0.95) and knobs["COMPILE"] == "cuda"


def test_same_code_and_seed_same_result_and_the_baseline_is_not_optimal() -> None:
    first = sim.simulate(BASELINE, seed=1)
    assert first == sim.simulate(BASELINE, seed=1) and first["synthetic"] is True
    assert sim.simulate(BASELINE, seed=2)["val_bpb"] != first["val_bpb"]
    assert first["val_bpb"] > sim.FLOOR + 5 * sim.NOISE


def test_moving_a_knob_towards_its_optimum_helps() -> None:
    baseline = read_knobs(BASELINE)
    base = sim.loss(baseline, baseline)
    # The optimum of MATRIX_LR, by the tier's own construction: within a factor of 2 of the baseline.
    optimum = baseline["MATRIX_LR"] * math.exp(sim.SPREAD * (2 * sim._unit("optimum", "MATRIX_LR") - 1))
    halfway = baseline["MATRIX_LR"] * math.sqrt(optimum / baseline["MATRIX_LR"])
    values = [sim.loss(read_knobs(set_knobs(BASELINE, MATRIX_LR=lr)), baseline) for lr in (halfway, optimum)]
    assert base > values[0] > values[1], "each step towards the optimum gains strictly"
    away = baseline["MATRIX_LR"] ** 2 / optimum  # as far from the optimum on the other side
    assert sim.loss(read_knobs(set_knobs(BASELINE, MATRIX_LR=away)), baseline) > base


def test_invalid_knobs_diverge_or_crash() -> None:
    assert sim.simulate(set_knobs(BASELINE, MATRIX_LR=-0.1), seed=1)["status"] == "diverged"
    assert sim.simulate(set_knobs(BASELINE, MATRIX_LR=300.0), seed=1)["status"] == "diverged"
    crashed = sim.simulate(BASELINE.replace("DEPTH = 4", "DEPTH = 'four'"), seed=1)
    assert crashed["status"] == "crash" and "DEPTH" in crashed["reason"]
    assert sim.simulate("def train(:", seed=1)["status"] == "crash"


def test_a_sim_run_goes_through_the_runner_without_data(run_small, tmp_path: Path) -> None:
    empty = HarnessSettings(cache_dir=tmp_path / "cache")
    result = run_small(BASELINE, FAST_SIM, settings=empty)
    assert result.status == "ok" and result.synthetic and result.tier == "sim"
    assert result.val_bpb == sim.simulate(BASELINE, seed=1)["val_bpb"]
    assert not empty.cache_dir.exists() or not any(empty.cache_dir.iterdir()), "the sim prepared a corpus"


def test_the_sim_process_and_the_runner_do_not_import_torch() -> None:
    """Agents import the runner while heartbeating, and sim runs must stay light."""
    import subprocess
    import sys

    code = "import sys, harness.sim, harness.runner; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_sim_large_keeps_sims_optimum_for_some_knobs_and_moves_it_for_others() -> None:
    base = read_knobs(BASELINE)

    def gain(tier: str, **changed: object) -> float:
        return sim.loss(base, base, tier) - sim.loss({**base, **changed}, base, tier)

    assert gain("sim", SOFTCAP=9.4) > 0.005 and math.isclose(gain("sim", SOFTCAP=9.4), gain("sim-large", SOFTCAP=9.4))
    assert gain("sim", DEPTH=7) > 0.005 and gain("sim-large", DEPTH=7) < -0.005  # a winner below, a loser above
    shifted = [k for k in base if sim._optimum(k, "sim-large") != sim._optimum(k, "sim")]
    assert 0 < len(shifted) < len(base)


def test_a_sim_audit_is_the_same_function_with_its_own_noise(run_small) -> None:
    """An audit run of the sim scores the same code on another held-out sample: the same noise-free
    loss, another noise draw, and the result says which split it was scored on."""
    audit = run_small(BASELINE, FAST_SIM, split="audit")
    search = sim.simulate(BASELINE, seed=1)
    assert audit.status == "ok" and audit.split == "audit" and audit.val_bpb == sim.simulate(BASELINE, seed=1, split="audit")["val_bpb"]
    assert audit.val_bpb != search["val_bpb"] and abs(audit.val_bpb - search["val_bpb"]) < 10 * sim.NOISE
