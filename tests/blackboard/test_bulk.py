"""Synthetic boards for the benchmarks: the stream applies cleanly, the bulk load is a board the queries read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from blackboard import bulk, queries
from roles import ROLES
from blackboard.projection import Projection


def test_the_synthetic_stream_is_the_same_on_every_call_and_applies_to_a_tidy_board(projection: Projection) -> None:
    events = bulk.synthetic_events(30)
    assert [e.model_dump() for e in events] == [e.model_dump() for e in bulk.synthetic_events(30)]
    assert len(events) == 1 + 30 * 11
    projection.apply_many(enumerate(events, 1))
    cursor = projection.cursor()
    assert cursor.execute("SELECT status, count(*) FROM work GROUP BY ALL").fetchall() == [("done", 30)]
    assert cursor.execute("SELECT status, count(*) FROM claims GROUP BY ALL").fetchall() == [("released", 30)]
    assert cursor.execute("SELECT count(*) FROM runs WHERE status = 'ok' AND hypothesis IS NOT NULL").fetchone() == (30,)
    cursor.close()


def test_a_bulk_loaded_board_answers_the_named_queries(projection: Projection) -> None:
    bulk.load_runs(projection.conn, 3000, roles=list(ROLES), arenas=4, agents=8, seeds=3)
    cursor = projection.cursor()
    counts = cursor.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM patches), (SELECT count(*) FROM work)").fetchone()
    assert counts == (3000, 1000 + 4, 3000)
    assert cursor.execute("SELECT count(*) FROM runs r LEFT JOIN patches p USING (patch) WHERE p.patch IS NULL").fetchone() == (0,)
    deepest = queries.lineage(cursor, "r-2999")
    assert deepest is not None and deepest["patches"][-1]["patch"].startswith("p-base-")
    assert len({p["patch"] for p in deepest["patches"]}) == len(deepest["patches"]) > 3
    assert len({row["arena"] for row in deepest["patches"]}) == 1  # a lineage stays in its arena
    for filters in bulk.history_filters(cursor).values():
        found = queries.history(cursor, **filters)
        assert found, f"history({filters}) found nothing"
        assert [r["updated_at"] for r in found] == sorted((r["updated_at"] for r in found), reverse=True)
    assert len(queries.best_per_arena(cursor)) == 4
    cursor.close()


def test_the_benchmark_entry_point_prints_its_figures(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_bulk.py"
    apply = subprocess.run([sys.executable, str(script), "apply", "--cycles", "20", "--batch", "50"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    history = subprocess.run([sys.executable, str(script), "history", "--runs", "2000", "--calls", "3",
                              "--db", str(tmp_path / "h.duckdb")], capture_output=True, text=True, check=True)  # fmt: skip
    out = apply.stdout + history.stdout
    assert "apply: 221 events in batches of 50:" in out and "events/s" in out
    assert "loaded 2,000 runs" in out and out.count("p50") == 7
