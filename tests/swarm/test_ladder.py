"""A ladder of tiers as a person runs it, on the sim ladder (sim -> sim-large) so it takes a minute:
`swarm up --ladder` ends by itself and its summary shows both rungs and what climbed; a node that
serves only one rung claims only that rung's work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from tests.cluster.test_head import join_parts, start, stop
from tests.cluster.test_machines import Lines

# z = 1: the sim's noise makes winners often enough that a short run promotes and transfers some.
SIM = {"SWARM_HARNESS__SIM_SECONDS": "0.3", "SWARM_BOARD__LEASE_SECONDS": "5", "SWARM_BOARD__Z": "1.0"}


def swarm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarm", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})  # fmt: skip


def test_up_with_a_ladder_ends_by_itself_and_its_summary_shows_each_rung_and_each_winners_transfer(tmp_path: Path) -> None:
    directory = tmp_path / "swarm"
    process = subprocess.run(
        [sys.executable, "-m", "swarm", "up", "--dir", str(directory), "--ladder", "sim,sim-large", "--no-view",
         "--max-runs", "60"], capture_output=True, text=True, timeout=400, env={**os.environ, **SIM},
    )  # fmt: skip
    out = process.stdout + process.stderr
    assert process.returncode == 0, out
    assert "rung sim: sim/" in out and "rung sim-large: sim-large/" in out, out
    with duckdb.connect(str(directory / "board.duckdb"), read_only=True) as db:
        winners = db.execute("""SELECT b.patch FROM bests b JOIN arenas a USING (arena)
                                WHERE b.previous IS NOT NULL AND a.tier = 'sim'""").fetchall()  # fmt: skip
        outcomes = dict(db.execute("SELECT source, outcome FROM transfers WHERE NOT restack").fetchall())
        upper_ideas = db.execute("""SELECT count(*) FROM hypotheses h JOIN arenas a USING (arena)
                                    WHERE a.tier = 'sim-large'""").fetchone()[0]  # fmt: skip
    assert upper_ideas == 0, "new ideas go to the lowest rung only"
    for (winner,) in winners:  # each winner's transfer: its outcome, or why it has none yet
        line = next((line for line in out.splitlines() if line.strip().startswith(f"sim -> sim-large: {winner}")), None)
        assert line is not None, out
        assert (f": {outcomes[winner]}: " in line) if winner in outcomes else "no outcome yet" in line, line
    rates = json.loads(swarm("best", "--dir", str(directory), "--format", "json").stdout)
    upper = next(best for best in rates if best["arena"].startswith("sim-large/"))
    held = sum(1 for outcome in outcomes.values() if outcome == "held")
    assert [(r["transferred"], r["held"]) for r in upper["transfers_in"]] == ([(len(outcomes), held)] if outcomes else [])
    status = json.loads(swarm("status", "--dir", str(directory), "--format", "json").stdout)
    every_rung = [rate for best in rates for rate in best["transfers_in"]]  # a restack on sim is sim's
    assert sorted(status["transfer_rates"], key=str) == sorted(every_rung, key=str)


def test_a_node_serving_one_rung_claims_only_that_rungs_work(tmp_path: Path) -> None:
    for name in ("head", "lower", "upper"):
        (tmp_path / name).mkdir()
    head = start("head", "--listen", "127.0.0.1:-1", "--ladder", "sim,sim-large", "--no-node", "--no-view",
                 "--auth", "none", cwd=tmp_path / "head")  # fmt: skip
    nodes: list[subprocess.Popen[str]] = []
    try:
        args = join_parts(Lines(head).wait_for(r"^\s+((scp .+ && )?swarm join .+)$").group(1))
        for name, tier in (("lower", "sim"), ("upper", "sim-large")):
            nodes.append(start("join", *args, "--tiers", tier, "--name", name, "--no-view", "--implementers", "1",
                               cwd=tmp_path / name))  # fmt: skip
        Lines(nodes[1]).wait_for(r"joined .* as upper")
        board = tmp_path / "head" / ".swarm" / "board.duckdb"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # until the upper node has run the sim-large baseline's seeds
            rows = dict(_tiers_per_node(board))
            if len(rows.get("upper", [])) and len(rows.get("lower", [])) and _runs_of(board, "upper") >= 3:
                break
            time.sleep(1)
    finally:
        stop(*nodes)
        stop(head)
    tiers = dict(_tiers_per_node(board))
    assert tiers == {"lower": ["sim"], "upper": ["sim-large"]}, tiers


def _query(board: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    """Read the head's board while its service holds it: through `swarm query` on the running swarm."""
    result = swarm("query", "--dir", str(board.parent), "--format", "json", sql)
    return [tuple(row.values()) for row in json.loads(result.stdout)] if result.returncode == 0 else []


def _tiers_per_node(board: Path) -> list[tuple[str, list[str]]]:
    return _query(board, "SELECT node, list_sort(list_distinct(list(tier))) FROM runs GROUP BY node")  # type: ignore[return-value]


def _runs_of(board: Path, node: str) -> int:
    rows = _query(board, f"SELECT count(*) FROM runs WHERE node = '{node}' AND status = 'ok'")
    return int(rows[0][0]) if rows else 0
