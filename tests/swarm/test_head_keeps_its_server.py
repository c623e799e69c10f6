"""The head keeps its nats-server alive: one that exits is restarted with its configuration and store."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import pytest

from blackboard.events import AgentJoined, decode, envelope
from swarm.ground.bus import Bus
from swarm.ground.errors import BusError
from swarm.ground.settings import Settings
from swarm.head import Head, HeadOptions


async def test_a_terminated_nats_server_is_restarted_on_its_port_with_its_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    head = Head(Settings(dir=tmp_path / "swarm"), HeadOptions())
    await asyncio.to_thread(head.start_servers)
    keeper = asyncio.create_task(head.keep_servers())
    try:
        [server] = head.servers
        first, url = server.process, server.url
        assert first is not None
        bus = await Bus.connect(head.local_urls(), name="test", wait=30)
        try:
            await bus.ensure_stream()
            await bus.publish(envelope(AgentJoined(by="a", agent="a", role="ideator", node="n")))
            first.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                while server.process is first or server.process is None or server.process.poll() is not None:
                    await asyncio.sleep(0.1)
            assert first.returncode is not None, "the old process was reaped, not left a zombie"
            assert server.url == url, "restarted where its clients reconnect"
            async with asyncio.timeout(60):  # the same client, reconnected, reads the stream kept in the store
                while True:
                    try:
                        stored = await bus.stored()
                        break
                    except BusError:  # still reconnecting; the timeout above bounds it
                        await asyncio.sleep(0.2)
            assert [decode(m.data).kind for _, m in stored] == ["agent_joined"]
        finally:
            await bus.close()
        assert any(r.levelno == logging.WARNING and "restarting it with the same configuration" in r.getMessage()
                   for r in caplog.records)  # fmt: skip
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        head.kill()
