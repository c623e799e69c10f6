"""Fixtures shared by every test: a real nats-server per test, its JetStream store in tmp_path."""

from __future__ import annotations

import os

# One intra-op thread for every torch process of the suite (before anything imports torch; runs
# inherit it): the suite runs two tests at once on 2 cores (scripts/test), and torch's default of a
# thread per core, beside any other busy process, spins in its barriers and trains 3x slower
# (measured: a tiny run beside one busy core did not finish in 300 s; one thread, 120 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# pytest-xdist's workers inherit COLUMNS=80 and LINES=24, which the CLI takes for a terminal's size
# (its tables fold ids to fit); without them, output to a pipe is as the tests expect it anywhere.
for name in ("COLUMNS", "LINES"):
    os.environ.pop(name, None)

from collections.abc import AsyncIterator, Iterator  # noqa: E402
from pathlib import Path

import pytest

from swarm.ground.bus import Bus
from swarm.natsserver import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(dir=tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    connection = await Bus.connect(nats_server.url, name="test")
    await connection.ensure_stream()
    try:
        yield connection
    finally:
        await connection.close()
