"""Reading a swarm's history: while it runs (through its service) and after it stopped (its directory).

One sim swarm serves the module: the tests that need its agents at work come first, then it is
stopped and the rest read its directory, or its head brought back without agents.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from swarm.natsserver import NatsServer
from tests.terminal import Terminal
from tests.history.sim import Head, SimSwarm, count_runs, swarm

# --- while the agents work ---------------------------------------------------------------------------


def test_status_of_a_running_swarm_shows_each_agent_and_what_it_is_doing(live: SimSwarm) -> None:
    result = swarm("status", "--url", live.url(), "--format", "json")
    assert result.exit_code == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["live"] and status["service"]["leader"]
    roles = {line["role"] for line in status["statuses"].values() if time.time() - line["at"] < 10 and line["doing"]}
    assert roles == {"ideator", "implementer", "reviewer", "replicator"}, status["statuses"]
    [node] = status["nodes"]
    assert node["active_agents"] == 4 and node["devices"] == ["cpu"] and node["runs"] >= 8
    # runs per hour is read after the counts, and the agents go on: it may hold a run or two more
    assert status["counts"]["runs"] >= 8 and sum(hour["runs"] for hour in status["runs_per_hour"]) >= status["counts"]["runs"]
    [best] = status["bests"]
    assert best["lineage"][0] == "baseline" and best["n"] >= 3
    table = swarm("status", "--url", live.url())
    assert table.exit_code == 0, table.stderr
    for heading in ("arenas", "nodes", "agents", "runs per hour", "recent runs", "cost per result, by brain kind"):
        assert heading in table.stdout
    assert [cost["brain"] for cost in status["costs"]] == ["offline"]  # LLM dollars and device hours per promotion
    assert "implementer-1@" in table.stdout and "running, read from the service at" in table.stdout


def test_a_running_swarms_directory_is_read_through_its_service(live: SimSwarm) -> None:
    """Its board file is locked by the service (DuckDB: one process per file); the ports file of its
    nats-server says where to ask instead."""
    result = swarm("status", "--dir", str(live.dir), "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["source"].startswith(f"the running swarm in {live.dir}")
    runs = swarm("history", "--dir", str(live.dir), "--limit", "3", "--format", "json")
    assert runs.exit_code == 0 and len(json.loads(runs.stdout)) == 3, runs.stderr


def test_status_watch_refreshes_until_ctrl_c(live: SimSwarm) -> None:
    watch = Terminal([sys.executable, "-m", "swarm", "status", "--watch", "--interval", "0.5", "--url", live.url()])
    try:
        refreshed = watch.wait_for(lambda out: len(set(re.findall(r"as of (\d\d:\d\d:\d\d)", out))) >= 2, "a refresh")
        assert "runs in flight" in refreshed
        watch.interrupt()
        assert watch.wait() == 0, watch.text
        assert "agents" in watch.text and "Traceback" not in watch.text
    finally:
        watch.close()


# --- the same answers from a running swarm and from its directory -------------------------------------


def _ids(directory: Path) -> dict[str, str]:
    """A run, the best's patch, a replicated patch (runs, reviews, a verdict), a hypothesis."""
    with duckdb.connect(str(directory / "board.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM claims WHERE status = 'held'").fetchone() == (0,)  # a clean stop
        found = {
            "run": db.execute("SELECT run FROM runs WHERE purpose = 'explore' AND status = 'ok' ORDER BY run LIMIT 1").fetchone(),
            "best": db.execute("SELECT patch FROM current_bests").fetchone(),
            "patch": db.execute("SELECT patch FROM replications ORDER BY seq LIMIT 1").fetchone(),
            "idea": db.execute("SELECT hypothesis FROM hypotheses ORDER BY hypothesis DESC LIMIT 1").fetchone(),
        }  # fmt: skip
    assert all(found.values()), found
    return {kind: row[0] for kind, row in found.items() if row is not None}


QUERIES = [
    "SELECT purpose, status, count(*) AS n, min(val_bpb), max(started_at) FROM runs GROUP BY ALL ORDER BY ALL",
    "SELECT agent, role, devices, joined_at FROM agents ORDER BY agent",
    "SELECT hypothesis, intent, proposed_at FROM hypotheses ORDER BY hypothesis LIMIT 5",
    "SELECT count(*) AS events, max(seq) FROM events",
]


def _asks(directory: Path) -> list[tuple[str, ...]]:
    with duckdb.connect(str(directory / "board.duckdb"), read_only=True) as db:
        middle = db.execute("SELECT strftime(quantile_disc(updated_at, 0.5), '%Y-%m-%dT%H:%M:%S.%g') FROM runs").fetchone()[0]  # type: ignore[index]
    asks: list[tuple[str, ...]] = [
        ("history", "--format", "json", "--limit", "1000"), ("history",), ("history", "--format", "csv"),
        ("history", "--status", "ok", "--role", "replicator", "--format", "json"),
        ("history", "--since", middle, "--format", "json"), ("history", "--until", middle, "--limit", "3"),
        ("best",), ("best", "--format", "json"), ("best", "--format", "csv"),
        ("show", "no-such-id"), ("query", "DELETE FROM runs"), ("query", "SELECT nope FROM runs"),
    ]  # fmt: skip
    for id in _ids(directory).values():
        asks += [("show", id), ("show", id, "--format", "json")]
    for sql in QUERIES:
        asks += [("query", sql, "--format", fmt) for fmt in ("table", "csv", "json")]
    return asks


def test_query_history_show_best_and_export_answer_the_same_running_and_stopped(stopped: Path, tmp_path: Path) -> None:
    """One head brought back serves both: the asks, and the exports (see _same_export)."""
    asks = _asks(stopped)
    head = Head(stopped)
    try:
        running = {ask: swarm(*ask, "--url", head.url) for ask in asks}
        through_dir = swarm("status", "--dir", str(stopped), "--format", "json")
        assert swarm("export", str(tmp_path / "live.parquet"), "--url", head.url).exit_code == 0
        assert swarm("export", str(tmp_path / "live"), "--url", head.url).exit_code == 0
    finally:
        head.stop()
    _same_export(stopped, tmp_path)
    assert json.loads(through_dir.stdout)["source"].startswith("the running swarm in")
    from_file = json.loads(swarm("status", "--dir", str(stopped), "--format", "json").stdout)
    assert "board.duckdb" in from_file["source"]
    assert sum(hour["runs"] for hour in from_file["runs_per_hour"]) == from_file["counts"]["runs"] > 0
    for ask in asks:
        after = swarm(*ask, "--dir", str(stopped))
        before = running[ask]
        assert (before.exit_code, before.stdout, before.stderr) == (after.exit_code, after.stdout, after.stderr), ask
    assert running[("show", "no-such-id")].exit_code == 2
    assert running[("show", "no-such-id")].stderr == "swarm: no hypothesis, patch or run has the id 'no-such-id'\n"
    assert running[("query", "DELETE FROM runs")].stderr.startswith("swarm: query refused: DELETE statements")
    assert len(json.loads(running[("history", "--format", "json", "--limit", "1000")].stdout)) == count_runs(stopped)


def _same_export(stopped: Path, tmp_path: Path) -> None:
    """Export writes the same parquet from a running swarm (live*, written through its service) and from its directory."""
    assert swarm("export", str(tmp_path / "stopped.parquet"), "--dir", str(stopped)).exit_code == 0
    assert swarm("export", str(tmp_path / "stopped"), "--dir", str(stopped)).exit_code == 0
    with duckdb.connect() as db:
        live = db.execute(f"SELECT * FROM '{tmp_path / 'live.parquet'}' ORDER BY run").fetchall()
        assert live == db.execute(f"SELECT * FROM '{tmp_path / 'stopped.parquet'}' ORDER BY run").fetchall()
        assert len(live) == count_runs(stopped)
        columns = [row[0] for row in db.execute(f"DESCRIBE SELECT * FROM '{tmp_path / 'live.parquet'}'").fetchall()]
        assert {"run", "title", "parent", "role", "val_bpb", "started_at"} <= set(columns)
    # Each directory export reads like the board itself: the same history, through the same command.
    board = swarm("history", "--dir", str(stopped), "--format", "json", "--limit", "1000").stdout
    for export in ("live", "stopped"):
        assert swarm("history", "--dir", str(tmp_path / export), "--format", "json", "--limit", "1000").stdout == board


# --- each command on the stopped swarm -----------------------------------------------------------------


def test_history_filters_by_status_role_agent_and_time(stopped: Path) -> None:
    def runs(*args: str) -> list[dict[str, object]]:
        result = swarm("history", "--dir", str(stopped), "--format", "json", "--limit", "1000", *args)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    every = runs()
    assert len(every) == count_runs(stopped) and [r["updated_at"] for r in every] == sorted((r["updated_at"] for r in every), reverse=True)
    assert {r["role"] for r in runs("--role", "replicator")} == {"replicator"}
    assert {r["agent"] for r in runs("--agent", str(every[0]["agent"]))} == {every[0]["agent"]}
    assert all(r["status"] == "ok" for r in runs("--status", "ok"))
    assert runs("--since", "1h") == every and runs("--until", "2h") == [] and len(runs("--limit", "2")) == 2
    table = swarm("history", "--dir", str(stopped), "--limit", "5")
    assert table.stdout.startswith("5 runs, newest first") and str(every[0]["run"]) in table.stdout
    rows = list(csv.DictReader(io.StringIO(swarm("history", "--dir", str(stopped), "--format", "csv").stdout)))
    assert rows[0]["run"] == every[0]["run"] and "title" in rows[0]


def test_show_gives_the_record_diff_results_reviews_claims_and_lineage(stopped: Path) -> None:
    ids = _ids(stopped)
    run, patch, idea = ids["run"], ids["patch"], ids["idea"]
    shown = json.loads(swarm("show", patch, "--dir", str(stopped), "--format", "json").stdout)
    assert shown["kind"] == "patch" and shown["record"]["diff"].startswith("--- a/train.py")
    assert shown["runs"] and shown["reviews"] and shown["claims"] and shown["replications"]
    steps = shown["lineage"]["patches"]
    assert steps[0]["patch"] == patch and steps[-1]["parent"] is None  # back to the baseline
    text = swarm("show", patch, "--dir", str(stopped)).stdout
    for part in ("patch " + patch, "diff of " + patch, "+++ b/train.py", "reviews", "claims", "lineage, from the baseline"):
        assert part in text
    assert json.loads(swarm("show", run, "--dir", str(stopped), "--format", "json").stdout)["kind"] == "run"
    hypothesis = json.loads(swarm("show", idea, "--dir", str(stopped), "--format", "json").stdout)
    assert hypothesis["kind"] == "hypothesis" and hypothesis["lineage"]["patches"][-1]["parent"] is None


def test_best_gives_each_arena_its_mean_std_n_idea_and_lineage(stopped: Path) -> None:
    [best] = json.loads(swarm("best", "--dir", str(stopped), "--format", "json").stdout)
    assert best["n"] >= 3 and best["std"] >= 0 and best["synthetic"] is True
    assert best["lineage"][0]["parent"] is None and best["lineage"][-1]["patch"] == best["patch"]
    table = swarm("best", "--dir", str(stopped)).stdout
    assert "(synthetic)" in table and f"{best['mean']:.4f} ± {best['std']:.4f}" in table
    assert "cost per result, by brain kind" in table and "offline" in table  # promotions per brain: LLM $, device h
    assert swarm("best", "--dir", str(stopped), "--arena", "nowhere", "--format", "json").stdout.strip() == "[]"


def test_query_prints_tables_csv_and_json_and_refuses_what_is_not_a_read(stopped: Path) -> None:
    sql = "SELECT status, count(*) AS n FROM runs GROUP BY status ORDER BY status"
    rows = json.loads(swarm("query", sql, "--dir", str(stopped), "--format", "json").stdout)
    assert sum(row["n"] for row in rows) == count_runs(stopped)
    assert swarm("query", sql, "--dir", str(stopped), "--format", "csv").stdout.splitlines()[0] == "status,n"
    truncated = swarm("query", "SELECT run FROM runs", "--dir", str(stopped), "--limit", "2", "--format", "csv")
    assert len(truncated.stdout.splitlines()) == 3 and "more rows than shown" in truncated.stderr
    for sql, why in [("DROP TABLE runs", "DROP statements"), ("SELECT * FROM read_csv('/etc/passwd')", "table function read_csv()"),
                     ("SELECT 1; SELECT 2", "one statement at a time")]:  # fmt: skip
        refused = swarm("query", sql, "--dir", str(stopped))
        assert refused.exit_code == 2 and refused.stdout == "", sql
        assert refused.stderr.startswith("swarm: query refused: ") and why in refused.stderr and refused.stderr.count("\n") == 1


@pytest.mark.parametrize(("args", "message"), [
    (("history", "--url", "nats://127.0.0.1:9"), "swarm: cannot connect to NATS at nats://127.0.0.1:9"),
    (("best", "--dir", "/nonexistent/swarm"), "swarm: no swarm directory at /nonexistent/swarm"),
    (("query", "SELECT 1", "--dir", "/"), "swarm: / holds no board"),
    (("history", "--since", "yesterday", "--dir", "/"), "swarm: --since 'yesterday': give an ISO time"),
])  # fmt: skip
def test_bad_input_is_one_clear_line_and_exit_status_2(args: tuple[str, ...], message: str) -> None:
    result = swarm(*args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_a_locked_board_without_a_reachable_server_says_what_to_do(stopped: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(60)", str(stopped / "board.duckdb")],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = swarm("history", "--dir", str(stopped))
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2 and "another process holds it" in result.stderr and "--url" in result.stderr


def test_a_nats_server_without_a_service_does_not_hide_the_board_file(stopped: Path) -> None:
    server = NatsServer(dir=stopped / "nats").start()  # its ports file says the swarm runs; no service answers
    try:
        result = swarm("status", "--dir", str(stopped), "--format", "json")
    finally:
        server.stop()
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["source"] == str(stopped / "board.duckdb")
