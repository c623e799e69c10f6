"""Real sim-tier swarms for the tests that read history: `swarm up` as a person runs it, the head of a
stopped swarm brought back without agents, and the `swarm` command run in this process.

The fixtures `live` and `stopped` give a module one swarm: at work, then stopped. A conftest makes
them its own by importing them (tests/history and tests/report do).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner, Result

from blackboard.client import Board
from swarm.ground.bus import Bus
from swarm.cli import main
from swarm.natsserver import NatsServer
from tests.swarm.test_up import SIM, Output, up


def swarm(*args: str) -> Result:
    """`swarm ARGS` in this process (no interpreter start-up), its stdout and stderr kept apart."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


class SimSwarm:
    """`swarm up --tier sim --no-view` in a subprocess (as tests/swarm runs it), its output collected."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.dir = directory
        self.process = up(directory, *args)
        self.out = Output(self.process)
        self.wait_for_runs = self.out.wait_for_runs

    def output(self) -> str:
        return "\n".join(self.out.lines)

    def url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.out.lines):
                if found := re.search(r"NATS at (nats://[^\s,]+)", line):
                    return found.group(1)
            assert self.process.poll() is None, self.output()
            time.sleep(0.1)
        raise AssertionError(f"no NATS URL in {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 120) -> str:
        """Ctrl-C, as a person stops it: agents drain, the service flushes the board and exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        output = self.out.finish(timeout)
        assert self.process.returncode == 0, output
        return output


class Head:
    """A stopped swarm's nats-server (on its own store) and blackboard service, with no agents: the
    swarm runs again, and nothing changes its board while the tests compare answers."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.server = NatsServer(dir=directory / "nats").start()
        self.url = self.server.url
        (directory / "logs").mkdir(exist_ok=True)
        self.log = open(directory / "logs" / "test-service.log", "ab")
        self.service = subprocess.Popen(
            [sys.executable, "-m", "swarm", "service", "--url", self.url, "--db", str(directory / "board.duckdb"),
             "--instance", "test-service"],
            stdout=subprocess.DEVNULL, stderr=self.log, env={**os.environ, **SIM},
        )  # fmt: skip
        try:
            asyncio.run(self._ready())
        except BaseException:
            self.stop()
            raise

    async def _ready(self, timeout: float = 60) -> None:
        """Until the service leads and has stopped writing: it publishes that it leads, and decides
        whatever the stream left pending, just after it starts."""
        bus = await Bus.connect(self.url, name="test", wait=10)
        board = Board(bus, "test", retry_seconds=30)
        deadline = time.monotonic() + timeout
        try:
            last = None
            while time.monotonic() < deadline:
                stats = await board.stats()
                if stats["service"]["leader"] and stats["last_seq"] == last:
                    return
                last = stats["last_seq"] if stats["service"]["leader"] else None
                await asyncio.sleep(1.0)
            raise AssertionError(f"the service did not settle in {timeout} s")
        finally:
            await bus.close()

    def stop(self) -> None:
        if self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM)
            self.service.wait(30)
        self.server.stop()
        self.log.close()


def count_runs(directory: Path) -> int:
    with duckdb.connect(str(directory / "board.duckdb"), read_only=True) as db:
        return db.execute("SELECT count(*) FROM runs").fetchone()[0]  # type: ignore[index]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimSwarm]:
    """A swarm at work with 8 runs done: it runs until the module's `stopped` fixture stops it, so
    tests that need it running come first in their module."""
    running = SimSwarm(tmp_path_factory.mktemp("sim") / "swarm", "--duration", "600")
    try:
        running.url()
        running.wait_for_runs(8)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def stopped(live: SimSwarm) -> Path:
    """The same swarm after Ctrl-C, with 16 runs or more (a candidate replicated and judged): everything
    it did is in its directory."""
    live.wait_for_runs(16)
    live.stop()
    return live.dir
