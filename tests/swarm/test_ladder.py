"""A ladder of tiers as a person runs it, on the sim ladder (sim -> sim-large) so it takes a minute:
`swarm up --ladder` ends by itself and its summary shows both rungs and what climbed. That a node
serving only one rung claims only that rung's work is tests/cluster/test_rungs.py's, on hosts of
their own, with the board read through `swarm query` as well."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

# z = 1: the sim's noise makes winners often enough that a short run promotes and transfers some.
SIM = {"SWARM_HARNESS__SIM_SECONDS": "0.1", "SWARM_BOARD__LEASE_SECONDS": "5", "SWARM_BOARD__Z": "1.0"}


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
