"""`swarm up`'s watcher: silence from the board is not health."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from rich.console import Console

from swarm.ground.bus import Bus
from swarm.ground.settings import BoardSettings
from swarm.up import WARN_AFTER, Watcher
from swarm.view import LogView, headline
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


async def test_the_log_view_prints_a_line_when_something_happens_not_as_the_clock_runs(bus: Bus, tmp_path: Path) -> None:
    watcher = Watcher(bus)
    async with running_service(bus, tmp_path / "board.duckdb", BoardSettings()) as service:
        await wait_leading(service)
        await watcher.refresh()
    out = io.StringIO()
    view = LogView(Console(file=out, width=200))
    watcher.stats["service"]["runs_finished"] = 1
    for elapsed in (61.0, 62.0, 95.0, 3700.0):  # the clock and the hourly rate move, nothing happened
        view.update(watcher, elapsed)
    assert out.getvalue().count("\n") == 1, out.getvalue()
    watcher.stats["service"]["runs_finished"] = 2  # a run finished
    view.update(watcher, 3701.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "runs 2 done" in lines[1] and lines[1].startswith("up 1h01m"), lines
