"""A run that will never report is declared lost; a late result still wins."""

from __future__ import annotations

from pathlib import Path

from blackboard.events import RunFinished, RunLost, RunStarted
from blackboard.projection import Projection

IDS = dict(run="r-1", patch="p-1", arena="a", work="w-1", seed=0, purpose="explore", tier="sim", device="cpu", node="n")


def status(projection: Projection) -> list[tuple[str, str | None]]:
    return projection.cursor().execute("SELECT status, reason FROM runs").fetchall()


def test_a_lost_run_is_marked_lost_with_its_reason(tmp_path: Path) -> None:
    with Projection(tmp_path / "p.duckdb") as projection:
        projection.apply_many([(1, RunStarted(by="agent", **IDS)), (2, RunLost(by="s1", run="r-1", reason="its agent stopped"))])
        assert status(projection) == [("lost", "its agent stopped")]


def test_a_result_that_arrives_after_the_run_was_declared_lost_wins(tmp_path: Path) -> None:
    finished = RunFinished(by="agent", **IDS, status="ok", val_bpb=1.5, fingerprint="f", code_hash="h")
    with Projection(tmp_path / "p.duckdb") as projection:
        projection.apply_many([(1, RunStarted(by="agent", **IDS)), (2, RunLost(by="s1", run="r-1", reason="gone")),
                               (3, finished)])  # fmt: skip
        assert status(projection) == [("ok", None)]


def test_a_lost_declaration_after_the_result_changes_nothing(tmp_path: Path) -> None:
    finished = RunFinished(by="agent", **IDS, status="crash", reason="boom", fingerprint="f", code_hash="h")
    with Projection(tmp_path / "p.duckdb") as projection:
        projection.apply_many([(1, finished), (2, RunLost(by="s1", run="r-1", reason="gone"))])
        assert status(projection) == [("crash", "boom")]
