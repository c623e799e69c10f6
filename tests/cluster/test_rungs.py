"""Nodes that serve one rung of a ladder, on hosts of their own (network namespaces): a node serving
only the upper rung joins a swarm already at work on the lower one and receives only upper-rung
work; the node serving only the lower rung never claims upper-rung work, though there is some.
The stream shows it, and so does the running swarm's board, read through `swarm query`."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blackboard.client import Board
from blackboard.events import ClaimGranted, RunFinished, WorkQueued
from swarm.ground.bus import Bus
from tests.cluster.hosts import hosts
from tests.cluster.test_machines import Lines, read_stream, wait_runs

SIM = {"SWARM_HARNESS__SIM_SECONDS": "0.3", "SWARM_BOARD__LEASE_SECONDS": "30", "SWARM_BOARD__Z": "1.0"}


async def ok_runs_of(url: str, node: str) -> int:
    bus = await Bus.connect(url, name="test", wait=10)
    try:
        sql = f"SELECT count(*) FROM runs WHERE node = '{node}' AND status = 'ok'"
        return int((await Board(bus, "test", retry_seconds=30).query(sql))["rows"][0][0])
    finally:
        await bus.close()


def wait_node_runs(url: str, node: str, at_least: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while (done := asyncio.run(ok_runs_of(url, node))) < at_least:
        assert time.monotonic() < deadline, f"{node} finished only {done} runs in {timeout} s"
        time.sleep(1)


def tiers_per_node(url: str) -> dict[str, list[str]]:
    """Which tiers each node ran, as the running swarm's board says through `swarm query`."""
    sql = "SELECT node, list_sort(list_distinct(list(tier))) AS tiers FROM runs GROUP BY node"
    done = subprocess.run([sys.executable, "-m", "swarm", "query", "--url", url, "--format", "json", sql],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {row["node"]: row["tiers"] for row in json.loads(done.stdout)}


@pytest.mark.slow
def test_nodes_serving_one_rung_claim_only_that_rungs_work_and_the_upper_one_joins_a_running_swarm(tmp_path: Path) -> None:
    with hosts(["head", "lower", "upper"]) as machines:
        head, lower, upper = machines["head"], machines["lower"], machines["upper"]
        for name in machines:
            (tmp_path / name).mkdir()
        started = head.run(["swarm", "head", "--listen", f"{head.ip}:4222", "--ladder", "sim,sim-large", "--no-node",
                            "--no-view"], cwd=tmp_path / "head", env=SIM)  # fmt: skip
        join = Lines(started).wait_for(r"^\s+(swarm join \S+)").group(1)
        url = join.split()[2]
        below = lower.run([*shlex.split(join), "--tiers", "sim", "--name", "lower", "--no-view"], cwd=tmp_path / "lower", env=SIM)
        Lines(below).wait_for(r"^joined ")
        done = wait_runs(url, 8)  # the swarm is at work on the lower rung: its baseline and the first ideas
        above = upper.run([*shlex.split(join), "--tiers", "sim-large", "--name", "upper", "--no-view"],
                          cwd=tmp_path / "upper", env=SIM)  # fmt: skip
        Lines(above).wait_for(r"^joined ")
        wait_node_runs(url, "upper", 3)  # the upper rung's baseline seeds, at least
        wait_runs(url, done + 10)
        tiers = tiers_per_node(url)
        assert tiers == {"lower": ["sim"], "upper": ["sim-large"]}, tiers
        for host in (upper, lower, head):
            host.stop_all()

    events = [event for _, event in asyncio.run(read_stream(tmp_path / "head" / ".swarm" / "nats"))]
    tier_of_arena = {e.arena: e.arena.split("/", 1)[0] for e in events if isinstance(e, WorkQueued)}
    work_tier = {e.work: tier_of_arena[e.arena] for e in events if isinstance(e, WorkQueued)}
    claimed: dict[str, list[str]] = {"lower": [], "upper": []}
    for e in events:
        if isinstance(e, ClaimGranted):
            claimed[e.agent.rsplit("@", 1)[1]].append(work_tier[e.work])
    assert claimed["upper"] and set(claimed["upper"]) == {"sim-large"}, claimed["upper"]
    assert claimed["lower"] and set(claimed["lower"]) == {"sim"}, claimed["lower"]
    # There was upper-rung work to take while the lower node was at work: it left all of it alone.
    first_upper = next(i for i, e in enumerate(events) if isinstance(e, WorkQueued) and tier_of_arena[e.arena] == "sim-large")
    assert any(isinstance(e, ClaimGranted) and e.agent.endswith("@lower") for e in events[first_upper:])
    runs = {(e.node, e.tier) for e in events if isinstance(e, RunFinished)}
    assert runs == {("lower", "sim"), ("upper", "sim-large")}, runs
