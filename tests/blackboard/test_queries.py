"""Reading the board: the read-only check, run_query's limits, the named queries, Parquet export."""

from __future__ import annotations

import datetime as dt
import decimal
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storyline import ARENA, BASE, OTHER, T0

from blackboard import queries, schema
from blackboard.projection import Projection
from blackboard.queries import QueryFailed, QueryRefused, check_read_only, run_query
from swarm.ground.errors import BoardError


@pytest.fixture
def cursor(told: Projection) -> Any:
    cursor = told.cursor()
    yield cursor
    cursor.close()


def contents(p: Projection) -> dict[str, list[tuple[Any, ...]]]:
    cursor = p.cursor()
    try:
        return {table: cursor.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in schema.TABLES}
    finally:
        cursor.close()


# --- the read-only check ------------------------------------------------------------------------

READS = [
    "SELECT * FROM runs",
    "select run, val_bpb from RUNS where status = 'ok' order by val_bpb limit 3;",
    "FROM runs SELECT run",
    "WITH ok AS (SELECT * FROM runs WHERE status = 'ok') SELECT arena, avg(val_bpb) FROM ok GROUP BY arena",
    "WITH a AS (SELECT 1 AS x), b AS (SELECT x FROM a) SELECT * FROM b",
    "WITH RECURSIVE chain(patch) AS (SELECT 'p2' UNION ALL SELECT p.parent FROM chain JOIN patches p USING (patch)) SELECT * FROM chain",
    "SELECT r.run, h.title FROM runs r JOIN hypotheses h USING (hypothesis) WHERE r.val_bpb < (SELECT avg(val_bpb) FROM runs)",
    "SELECT run, row_number() OVER (PARTITION BY arena ORDER BY val_bpb) FROM runs QUALIFY row_number() OVER (PARTITION BY arena ORDER BY val_bpb) = 1",
    "SELECT patch FROM patches UNION ALL SELECT patch FROM runs EXCEPT SELECT 'x'",
    "SELECT * FROM range(3), generate_series(1, 2), unnest([1, 2])",
    "VALUES (1, 'a'), (2, 'b')",
    "SELECT payload->>'$.kind' AS kind, happened_at FROM events",
    "SELECT * FROM current_bests",
    "SELECT * FROM main.runs",
    "DESCRIBE runs",
    "SUMMARIZE runs",
    "SELECT 1 -- a comment; with a semicolon\n",
]

REFUSALS = {
    "delete": "DELETE FROM runs",
    "update": "UPDATE runs SET val_bpb = 0",
    "insert": "INSERT INTO runs (run, status) VALUES ('x', 'ok')",
    "copy out": "COPY runs TO '{tmp}/out.csv'",
    "copy in": "COPY runs FROM '{tmp}/in.csv'",
    "copy query": "COPY (SELECT * FROM runs) TO '{tmp}/out.parquet'",
    "attach": "ATTACH '{tmp}/other.duckdb' AS other",
    "detach": "DETACH other",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "pragma": "PRAGMA database_list",
    "set": "SET threads = 1",
    "create": "CREATE TABLE x AS SELECT * FROM runs",
    "create view": "CREATE VIEW v AS SELECT 1",
    "drop": "DROP TABLE runs",
    "export": "EXPORT DATABASE '{tmp}/export'",
    "call": "CALL pragma_version()",
    "explain": "EXPLAIN SELECT * FROM runs",
    "two statements": "SELECT 1; DROP TABLE runs",
    "two selects": "SELECT 1; SELECT 2",
    "empty": "   ",
    "not sql": "PLEASE DROP EVERYTHING",
    "read_csv": "SELECT * FROM read_csv('{tmp}/secret.csv')",
    "read_csv_auto in a subquery": "SELECT (SELECT count(*) FROM read_csv_auto('{tmp}/secret.csv'))",
    "read_text": "SELECT content FROM read_text('/etc/passwd')",
    "read_blob": "SELECT * FROM read_blob('/etc/passwd')",
    "read_parquet": "SELECT * FROM read_parquet('{tmp}/*.parquet')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "replacement scan": "SELECT * FROM '{tmp}/secret.csv'",
    "replacement scan, FROM first": "FROM '/etc/passwd'",
    "dotted file name": "SELECT * FROM secret.csv",
    "url": "SELECT * FROM 'https://example.com/data.parquet'",
    "file in a cte": "WITH x AS (SELECT * FROM '{tmp}/secret.csv') SELECT * FROM x",
    "cte naming itself": "WITH \"{tmp}/secret.csv\" AS (SELECT * FROM \"{tmp}/secret.csv\") SELECT * FROM \"{tmp}/secret.csv\"",
    "cte out of scope": "SELECT * FROM (WITH s AS (SELECT 1) SELECT * FROM s), s",
    "query()": "SELECT * FROM query('SELECT 1')",
    "settings": "SELECT * FROM duckdb_settings()",
    "secrets": "SELECT * FROM duckdb_secrets()",
    "system view": "SELECT * FROM duckdb_tables",
    "information_schema": "SELECT * FROM information_schema.tables",
    "another catalog": "SELECT * FROM board.main.runs",
    "sqlite": "SELECT * FROM sqlite_scan('{tmp}/x.db', 't')",
    "time travel": "SELECT * FROM runs AT (VERSION => 1)",
    "show tables": "SHOW TABLES",
    "setseed": "SELECT setseed(0.5)",
    "current_setting": "SELECT current_setting('home_directory')",
    "getvariable": "SELECT getvariable('x')",
    "nextval": "SELECT nextval('s')",
    "unknown table": "SELECT * FROM nonexistent",
}


@pytest.mark.parametrize("sql", READS)
def test_reads_of_the_board_pass_the_check_and_run(cursor: Any, sql: str) -> None:
    assert check_read_only(sql)
    run_query(cursor, sql)


@pytest.mark.parametrize("name", list(REFUSALS))
def test_statements_that_write_or_read_outside_the_board_are_refused_and_change_nothing(
    told: Projection, cursor: Any, tmp_path: Path, name: str
) -> None:
    (tmp_path / "secret.csv").write_text("password\nhunter2\n")
    sql = REFUSALS[name].format(tmp=tmp_path)
    before, files = contents(told), sorted(tmp_path.iterdir())
    with pytest.raises(QueryRefused, match="^query refused"):
        run_query(cursor, sql)
    assert contents(told) == before
    assert sorted(tmp_path.iterdir()) == files  # nothing written, attached or exported


def test_the_check_is_what_stops_a_file_read(cursor: Any, tmp_path: Path) -> None:
    """Unchecked, DuckDB would read the file: the refusal above is not an accident of a missing file."""
    (tmp_path / "secret.csv").write_text("password\nhunter2\n")
    assert cursor.execute(f"SELECT * FROM '{tmp_path}/secret.csv'").fetchall() == [("hunter2",)]
    with pytest.raises(QueryRefused):
        run_query(cursor, f"SELECT * FROM '{tmp_path}/secret.csv'")


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_any_text_is_either_a_checked_select_or_refused(sql: str) -> None:
    try:
        checked = check_read_only(sql)
    except QueryRefused:
        return
    assert checked.strip()


# --- run_query ----------------------------------------------------------------------------------


def test_results_are_columns_and_msgpack_safe_rows(cursor: Any) -> None:
    result = run_query(cursor, "SELECT run, val_bpb, updated_at, [1, 2] AS l FROM runs WHERE run = 'r-p1-0'")
    assert result == {
        "columns": ["run", "val_bpb", "updated_at", "l"],
        "rows": [["r-p1-0", 1.85, "2023-11-14T22:13:50.000Z", [1, 2]]],
        "truncated": False,
    }
    assert msgpack.unpackb(msgpack.packb(result)) == result


def test_rows_beyond_the_limit_or_the_byte_budget_are_cut_and_said_so(cursor: Any) -> None:
    result = run_query(cursor, "SELECT * FROM range(100)", limit=10)
    assert len(result["rows"]) == 10 and result["truncated"]
    assert run_query(cursor, "SELECT * FROM range(10)", limit=10)["truncated"] is False
    big = run_query(cursor, "SELECT repeat('x', 1000) FROM range(100)", max_bytes=10_000)
    assert 5 <= len(big["rows"]) < 10 and big["truncated"]


def test_a_query_over_its_time_limit_is_stopped(cursor: Any) -> None:
    started = time.monotonic()
    with pytest.raises(QueryFailed, match="over its 0.5 s limit"):
        run_query(cursor, "SELECT count(*) FROM range(1000000) a, range(1000000) b", timeout=0.5)
    assert time.monotonic() - started < 60  # generous: unstopped, this cross product runs for hours
    assert run_query(cursor, "SELECT 1")["rows"] == [[1]]  # the cursor is usable again


def test_a_query_that_fails_says_why(cursor: Any) -> None:
    with pytest.raises(QueryFailed, match="no_such_column"):
        run_query(cursor, "SELECT no_such_column FROM runs")


def test_values_become_msgpack_safe() -> None:
    aware = dt.datetime(2025, 1, 31, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert queries.safe_value(aware) == "2025-01-31T12:00:00.000Z"
    assert queries.safe_value(dt.datetime(2025, 1, 31, 12, 0, 0, 123456)) == "2025-01-31T12:00:00.123Z"
    assert queries.safe_value(decimal.Decimal("1.5")) == 1.5
    assert queries.safe_value(dt.timedelta(minutes=1)) == 60.0
    assert queries.safe_value(2**100) == str(2**100)
    assert queries.safe_value({"u": uuid.UUID(int=0), "d": [dt.date(2025, 1, 1)]}) == {
        "u": "00000000-0000-0000-0000-000000000000", "d": ["2025-01-01"],
    }  # fmt: skip


# --- named queries ------------------------------------------------------------------------------


def runs_of(found: list[dict[str, Any]]) -> list[str]:
    return [row["run"] for row in found]


def test_history_is_newest_first_with_titles_roles_and_nodes(cursor: Any) -> None:
    found = queries.history(cursor, limit=3)
    assert runs_of(found) == ["r-p2-0", "r-p1-2", "r-p1-1"]
    assert {k: found[0][k] for k in ("status", "title", "role", "node", "hypothesis", "parent")} == {
        "status": "oom", "title": "Deeper model", "role": "implementer", "node": "n1", "hypothesis": "h2", "parent": "p1",
    }  # fmt: skip
    assert msgpack.unpackb(msgpack.packb(found)) == found


@pytest.mark.parametrize(
    ("filters", "runs"),
    [
        ({"status": "oom"}, ["r-p2-0"]),
        ({"status": "failed"}, ["r-p2-0"]),
        ({"role": "replicator", "limit": 3}, ["r-p1-2", "r-p1-1", "r-base-2"]),
        ({"agent": "m1"}, ["r-p2-0", "r-p1-0"]),
        ({"role": "replicator", "agent": "m1"}, []),
        ({"arena": OTHER}, []),
        ({"arena": ARENA, "status": "ok", "since": T0 + 30, "until": T0 + 39.5}, ["r-p1-2", "r-p1-1", "r-p1-0"]),
        ({"since": T0 + 30, "until": T0 + 39}, ["r-p1-1", "r-p1-0"]),
        ({"role": "nobody"}, []),
    ],
)
def test_history_filters(cursor: Any, filters: dict[str, Any], runs: list[str]) -> None:
    assert runs_of(queries.history(cursor, **filters)) == runs


def test_lineage_of_a_run_walks_its_patches_back_to_the_baseline_with_the_promotions(cursor: Any) -> None:
    found = queries.lineage(cursor, "r-p2-0")
    assert found is not None
    assert [(p["patch"], p["title"], p["runs"], p["ok"]) for p in found["patches"]] == [
        ("p2", "Deeper model", 1, 0), ("p1", "Raise the LR", 3, 3), (BASE, None, 3, 3),
    ]  # fmt: skip
    assert found["patches"][1]["best_val_bpb"] == 1.84 and found["patches"][1]["mean_val_bpb"] == pytest.approx(1.85)
    assert [(b["patch"], b["previous"]) for b in found["promotions"]] == [(BASE, None), ("p1", BASE)]
    assert queries.lineage(cursor, "p2") == {**found, "id": "p2"}
    assert queries.lineage(cursor, "nothing") is None


def test_lineage_stops_at_a_cycle(told: Projection, cursor: Any) -> None:
    told.conn.execute("UPDATE patches SET parent = 'p2' WHERE patch = 'p1'")
    found = queries.lineage(cursor, "p2")
    assert found is not None and [p["patch"] for p in found["patches"]] == ["p2", "p1"]


def test_best_per_arena_is_the_latest_promotion_with_its_idea(cursor: Any) -> None:
    [best] = queries.best_per_arena(cursor)
    assert (best["arena"], best["patch"], best["title"], best["n"], best["previous"]) == (ARENA, "p1", "Raise the LR", 3, BASE)
    assert best["promoted_at"] == "2023-11-14T22:14:03.000Z"


def test_show_finds_a_run_a_patch_or_a_hypothesis(cursor: Any) -> None:
    run = queries.show(cursor, "r-p1-0")
    assert run is not None and run["kind"] == "run" and run["record"]["val_bpb"] == 1.85
    assert run["patch"]["diff"] == "-LR = 0.01\n+LR = 0.02\n" and [r["verdict"] for r in run["reviews"]] == ["approve"]
    assert [c["claim"] for c in run["claims"]] == ["c-w-impl-1"]
    patch = queries.show(cursor, "p1")
    assert patch is not None and patch["kind"] == "patch" and patch["record"]["code"] == "LR = 0.02\n"
    assert [r["run"] for r in patch["runs"]] == ["r-p1-0", "r-p1-1", "r-p1-2"]
    assert {c["work_kind"] for c in patch["claims"]} == {"implement", "replicate", "review"}
    assert [b["patch"] for b in patch["promotions"]] == ["p1"]
    hypothesis = queries.show(cursor, "h4")
    assert hypothesis is not None and hypothesis["record"]["intent"] == {}
    assert [(p["patch"], p["status"]) for p in hypothesis["patches"]] == [("p3", "refused")]
    assert [(c["work"], c["work_status"]) for c in hypothesis["claims"]] == [("w-impl-4", "claimed"), ("w-impl-5", "queued")]
    assert queries.show(cursor, "h1")["record"]["intent"] == {"knobs": {"LR": 0.02}}  # type: ignore[index]
    assert queries.show(cursor, "nothing") is None


def test_stats_count_runs_work_and_agents(cursor: Any) -> None:
    found = queries.stats(cursor, now=T0 + 3600 + 36)
    assert found["runs"] == [{"arena": ARENA, "total": 7, "ok": 6, "failed": 1, "running": 0}]
    assert found["work"] == [{"work_kind": "implement", "queued": 1, "claimed": 1}]
    assert found["runs_last_hour"] == 2  # r-p1-2 (finished at T0 + 39) and r-p2-0 (T0 + 51), not r-p1-1 (T0 + 35)
    assert (found["agents_active"], found["last_seq"], found["parked"]) == (4, 64, 0)


# --- export -------------------------------------------------------------------------------------


def test_an_export_has_every_table_and_answers_the_named_queries_alike(told: Projection, cursor: Any, tmp_path: Path) -> None:
    files = queries.export_parquet(cursor, tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == sorted(f"{t}.parquet" for t in schema.TABLES)
    assert len(files) == len(schema.TABLES)
    snapshot = queries.open_export(tmp_path / "export")
    try:
        assert queries.history(snapshot, limit=100) == queries.history(cursor, limit=100)
        assert queries.lineage(snapshot, "r-p2-0") == queries.lineage(cursor, "r-p2-0")
        assert queries.best_per_arena(snapshot) == queries.best_per_arena(cursor)
        assert queries.show(snapshot, "p1") == queries.show(cursor, "p1")
        assert run_query(snapshot, "SELECT count(*) FROM events")["rows"] == [[64]]
    finally:
        snapshot.close()


def test_a_directory_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BoardError, match="not a board export"):
        queries.open_export(tmp_path)


@pytest.mark.parametrize("filters", [{"limit": "10"}, {"since": "yesterday"}, {"status": 3}, {"limit": True}])
def test_history_filters_of_the_wrong_type_are_refused_plainly(cursor: Any, filters: dict[str, Any]) -> None:
    with pytest.raises(QueryFailed, match="history: .* must be"):
        queries.history(cursor, **filters)
