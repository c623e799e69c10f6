"""The audit split: a run's exported model scored on documents no search uses, by the same
evaluation process under the same sandbox, only the split file differs."""

from __future__ import annotations

import math
from pathlib import Path

from harness import prepare
from harness.runner import RunResult
from tests.harness.conftest import SMALL_TRAIN


def test_a_runs_model_scored_on_the_audit_split(run_small, small_baseline: RunResult, prepared: prepare.Prepared) -> None:  # type: ignore[no-untyped-def]
    """The shrunk baseline run again with the same seed (the same model: runs are deterministic),
    scored on the audit split as a promoted best's audit is: a real score near its validation score
    (the same model, other documents of the same corpus), not the same number."""
    assert small_baseline.status == "ok" and small_baseline.val_bpb is not None
    audit = run_small(SMALL_TRAIN, split="audit")
    assert audit.status == "ok" and audit.split == "audit", audit.reason
    assert audit.val_bpb is not None and math.isfinite(audit.val_bpb) and audit.val_bpb != small_baseline.val_bpb
    assert abs(audit.val_bpb - small_baseline.val_bpb) < 0.25 * small_baseline.val_bpb
    assert audit.params == small_baseline.params and audit.tokens == small_baseline.tokens
    assert (Path(audit.run_dir) / "eval.log").is_file() and prepared.audit_path.is_file()
