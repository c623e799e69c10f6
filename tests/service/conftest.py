"""Fixtures for the blackboard service: in-process services, service processes, a client, an arena."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from blackboard.client import Board
from blackboard.events import ArenaOpened, HypothesisProposed, new_id
from blackboard.projection import Projection
from blackboard.rules import code_hash
from blackboard.service import Service
from swarm.ground.bus import Bus
from swarm.natsserver import NatsServer
from swarm.ground.settings import BoardSettings

ARENA = "tiny/test-cpu/0123456789ab"
BASELINE = "LR = 0.01  # the baseline's one knob\n"


@asynccontextmanager
async def running_service(bus: Bus, db: Path, settings: BoardSettings, instance: str = "s1") -> AsyncIterator[Service]:
    """A service in this event loop, caught up and leading (or standing by) before it is handed out."""
    projection = Projection(db)
    service = Service(bus, projection, settings, instance)
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 30)
        yield service
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        projection.close()


async def wait_leading(service: Service, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not service.leader:
            await asyncio.sleep(0.05)


@pytest.fixture
def settings() -> BoardSettings:
    return BoardSettings(lease_seconds=3.0, promotion_seeds=3, min_delta=0.002, z=2.0)


@pytest.fixture
async def service(bus: Bus, tmp_path: Path, settings: BoardSettings) -> AsyncIterator[Service]:
    async with running_service(bus, tmp_path / "board.duckdb", settings) as svc:
        await wait_leading(svc)
        yield svc


@pytest.fixture
async def board(bus: Bus) -> Board:
    return Board(bus, agent="tester", retry_seconds=20)


async def open_arena(board: Board, arena: str = ARENA, code: str = BASELINE) -> str:
    """Open an arena; returns its baseline patch id."""
    baseline = f"p-base-{arena.replace('/', '-')}"
    await board.publish(ArenaOpened(by=board.agent, arena=arena, baseline_patch=baseline, fingerprint="f" * 64,
                                    tier="tiny", hardware="test-cpu", baseline_code=code, baseline_hash=code_hash(code)))  # fmt: skip
    return baseline


def hypothesis(title: str, arena: str = ARENA, parent: str | None = None, **intent: object) -> HypothesisProposed:
    return HypothesisProposed(by="tester", hypothesis=new_id("h"), arena=arena, parent=parent, title=title,
                              rationale="because", intent={"knobs": intent} if intent else {})  # fmt: skip


class ServiceProcess:
    """`swarm service` as an OS process, to kill as a crash would."""

    def __init__(self, url: str, db: Path, instance: str, lease_seconds: float, log: Path) -> None:
        env = {**os.environ, "SWARM_BOARD__LEASE_SECONDS": str(lease_seconds)}
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "swarm", "-v", "service", "--url", url, "--db", str(db), "--instance", instance],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


@pytest.fixture
def service_processes(nats_server: NatsServer, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.kill()
