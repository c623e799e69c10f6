"""`swarm up`'s watcher: silence from the board is not health."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from swarm.ground.bus import Bus
from swarm.ground.settings import BoardSettings
from swarm.up import WARN_AFTER, Watcher
from swarm.view import headline
from tests.service.conftest import running_service, wait_leading


async def test_a_board_that_stops_answering_is_a_warning_in_the_log_and_the_view(
    bus: Bus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watcher = Watcher(bus)
    watcher.board.retry_seconds = 0.5  # no service runs yet: each refresh fails after this
    for _ in range(WARN_AFTER - 1):
        await watcher.refresh()
    assert watcher.problem is None, "one failed refresh is a blip, not yet a warning"
    await watcher.refresh()
    assert watcher.problem is not None and "no blackboard service is answering" in watcher.problem
    assert "WARNING: the board has not answered for 3 refreshes" in headline(watcher, 10.0)
    assert any(r.levelno == logging.WARNING and "the board has not answered 3 times" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings()) as service:
        await wait_leading(service)
        await watcher.refresh()
    assert watcher.problem is None and "WARNING" not in headline(watcher, 10.0)
    assert watcher.stats["service"]["leader"]
