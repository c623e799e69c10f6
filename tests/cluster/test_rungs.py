"""Nodes that serve one rung of a ladder, on hosts of their own (network namespaces): a node serving
only the upper rung joins a swarm already at work on the lower one and receives only upper-rung
work; the node serving only the lower rung never claims upper-rung work, though there is some."""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path

import pytest

from blackboard.client import Board
from blackboard.events import ClaimGranted, RunFinished, WorkQueued
from swarm.ground.bus import Bus
from tests.cluster.hosts import hosts
from tests.cluster.test_machines import Lines, read_stream, wait_runs

SIM = {"SWARM_HARNESS__SIM_SECONDS": "0.5", "SWARM_BOARD__LEASE_SECONDS": "30", "SWARM_BOARD__Z": "1.0"}


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


@pytest.mark.slow
def test_a_node_serving_the_upper_rung_joins_a_running_swarm_and_gets_only_upper_rung_work(tmp_path: Path) -> None:
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
