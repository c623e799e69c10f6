"""The audit split: a run's exported model scored on documents no search uses, by the same
evaluation process under the same sandbox, only the split file differs."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from harness import prepare, runner, tiers
from harness.runner import RunResult
from swarm.ground.settings import HarnessSettings
from tests.harness.conftest import SMALL


def test_a_runs_model_scored_on_the_audit_split(small_baseline: RunResult, settings: HarnessSettings,
                                                prepared: prepare.Prepared) -> None:  # fmt: skip
    """The shrunk baseline's model (the tiny tier's data and model family, a few seconds of training)
    on the audit split: a real score near its validation score (the same model, other documents of
    the same corpus), not the same number, and its own log beside the run's."""
    assert small_baseline.status == "ok" and small_baseline.val_bpb is not None
    audit = asyncio.run(runner.score(Path(small_baseline.run_dir), SMALL, split="audit", settings=settings))
    assert audit["status"] == "ok", audit
    assert math.isfinite(audit["val_bpb"]) and audit["val_bpb"] != small_baseline.val_bpb
    assert abs(audit["val_bpb"] - small_baseline.val_bpb) < 0.25 * small_baseline.val_bpb
    assert audit["params"] == small_baseline.params
    assert (Path(small_baseline.run_dir) / "eval-audit.log").is_file() and prepared.audit_path.is_file()


def test_a_synthetic_tier_has_no_model_to_score(tmp_path: Path) -> None:
    try:
        asyncio.run(runner.score(tmp_path, tiers.get("sim")))
    except Exception as exc:
        assert "synthetic" in str(exc)
    else:
        raise AssertionError("scoring a sim run's (absent) model must say why it cannot")
