"""A swarm across three hosts (network namespaces): a head, two nodes joined while it runs.

One node's link is cut for a heartbeat and restored, then for longer than a lease; the head's blackboard service is killed and comes
back; a node without credentials is refused. Afterwards the stream and the board must agree:
every result arrived exactly once, no claim was ever held twice, nothing published was lost.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from blackboard.events import ClaimExpired, ClaimGranted, Event, RunFinished, RunStarted
from blackboard.projection import Projection
from blackboard.state import State
from swarm.ground.settings import BoardSettings
from swarm.ground.bus import Bus
from swarm.natsserver import NatsServer
from tests.cluster.hosts import Host, hosts
from tests.service.test_failover import check_no_decision_doubled, stream

# A 12 s lease (agents renew every lease / 3 = 4 s) keeps the cuts short: the short cut lasts one
# heartbeat, two heartbeats inside a lease; the long cut outlasts a lease by three heartbeats.
LEASE = 12.0
HEARTBEAT = LEASE / 3
SIM = {"SWARM_HARNESS__SIM_SECONDS": "1", "SWARM_BOARD__LEASE_SECONDS": str(LEASE)}


class Lines:
    """A process's output, collected by a thread as it comes."""

    def __init__(self, process) -> None:  # type: ignore[no-untyped-def]
        self.process, self.lines = process, []
        threading.Thread(target=lambda: self.lines.extend(line.rstrip() for line in process.stdout), daemon=True).start()

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            assert self.process.poll() is None, "\n".join(self.lines)
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} in {timeout} s:\n" + "\n".join(self.lines[-20:]))


async def finished_runs(url: str) -> int:
    bus = await Bus.connect(url, name="test", wait=10)
    try:
        from blackboard.client import Board

        return (await Board(bus, "test", retry_seconds=30).stats())["service"]["runs_finished"]
    finally:
        await bus.close()


def wait_runs(url: str, at_least: int, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while (done := asyncio.run(finished_runs(url))) < at_least:
        assert time.monotonic() < deadline, f"only {done} runs finished in {timeout} s"
        time.sleep(1)
    return done


def service_pid(head_dir: Path) -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"service" in cmd and str(head_dir / "board.duckdb").encode() in cmd:
                return int(proc.name)
    raise AssertionError("no service process")


async def read_stream(store: Path) -> list[tuple[int, Event]]:
    """The head's stream, read back from its store after the swarm stopped."""
    with NatsServer(dir=store) as server:
        bus = await Bus.connect(server.url, name="check")
        try:
            return await stream(bus)
        finally:
            await bus.close()


@pytest.mark.slow
def test_three_hosts_a_cut_link_and_a_killed_service_lose_and_double_nothing(tmp_path: Path) -> None:
    with hosts(["head", "n1", "n2"]) as machines:
        head, n1, n2 = machines["head"], machines["n1"], machines["n2"]
        for name in ("head", "n1", "n2"):
            (tmp_path / name).mkdir()
        started = head.run(["swarm", "head", "--listen", f"{head.ip}:4222", "--tier", "sim", "--no-node", "--no-view"],
                           cwd=tmp_path / "head", env=SIM)  # fmt: skip
        out = Lines(started)
        join = out.wait_for(r"^\s+(swarm join \S+)").group(1)
        url = join.split()[2]
        assert url.startswith(f"nats://swarm:") and url.endswith(f"@{head.ip}:4222")

        # A node without the password is refused, with the reason. It tries for a while before it gives
        # up, so n1 joins meanwhile and the refusal is read once the swarm runs.
        intruder = n2.run(["swarm", "join", f"nats://{head.ip}:4222", "--no-view"], cwd=tmp_path / "n2", env=SIM)

        # Namespaces share the host name: real machines would not, so each node says who it is.
        first = n1.run(shlex.split(join) + ["--no-view", "--name", "n1"], cwd=tmp_path / "n1", env=SIM)
        Lines(first).wait_for(r"^joined ")
        done = wait_runs(url, 4)  # the swarm is running: baseline and the first ideas
        said = intruder.communicate(timeout=60)[0]
        assert intruder.returncode == 2 and "Authorization Violation" in said, said
        second = n2.run(shlex.split(join) + ["--no-view", "--name", "n2"], cwd=tmp_path / "n2", env=SIM)
        Lines(second).wait_for(r"^joined ")

        n1.cut()  # shorter than a lease: n1 keeps working alone; its publishes wait for the link
        time.sleep(HEARTBEAT)
        n1.restore()
        done = wait_runs(url, done + 6)

        n1.cut()  # longer than a lease: n1's claims expire and their work goes to n2
        time.sleep(LEASE + 3 * HEARTBEAT)
        n1.restore()
        done = wait_runs(url, done + 6, timeout=240)

        os.kill(service_pid(tmp_path / "head" / ".swarm"), signal.SIGKILL)  # the head's supervisor restarts it
        wait_runs(url, done + 6, timeout=240)

        for host in (n1, n2, head):  # nodes leave first, then the head stops
            host.stop_all()
        assert started.returncode == 0, "\n".join(out.lines[-30:])

    swarm_dir = tmp_path / "head" / ".swarm"
    events = asyncio.run(read_stream(swarm_dir / "nats"))
    check_no_decision_doubled(events)  # the cut-off node's work was re-granted once, never while held
    granted = {e.claim: e.agent for _, e in events if isinstance(e, ClaimGranted)}
    expired = [granted.get(e.claim, "") for _, e in events if isinstance(e, ClaimExpired)]
    assert any(agent.endswith("@n1") for agent in expired), f"no claim of n1 expired in the long cut: {expired}"
    state = State(BoardSettings())
    for seq, event in events:
        state.apply(event, seq)
    for patch in state.patches.values():  # a late result from n1 never counts a (patch, seed) twice
        seeds = {run.seed for run in patch.runs if run.arena == patch.arena and run.status == "ok"}
        assert len(patch.ok_values()) == len(seeds), patch.id
    logs = "".join(path.read_text(errors="replace") for path in (tmp_path / "n1").rglob("*.log"))
    assert "lost claim" in logs, "n1's agents must notice and drop the claims they lost"
    finished = Counter(e.run for _, e in events if isinstance(e, RunFinished))
    assert finished and max(finished.values()) == 1, "a result arrived twice"
    started_runs = {e.run: e.node for _, e in events if isinstance(e, RunStarted)}
    nodes = set(started_runs.values())
    assert nodes == {"n1", "n2"}, f"runs came from {nodes}: both nodes must have worked"
    board = Projection(swarm_dir / "board.duckdb")
    rebuilt = Projection(tmp_path / "rebuilt.duckdb")
    try:
        rebuilt.rebuild(events)
        assert board.differences(rebuilt) == [], "the head's board lost or changed something"
        assert board.last_seq == events[-1][0]
    finally:
        board.close()
        rebuilt.close()
