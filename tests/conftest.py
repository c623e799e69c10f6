"""Fixtures shared by every test: a real nats-server per test, its JetStream store in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
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
