"""The supervisor of a node: starts its processes, restarts a crashed one with backoff, stops them.

Children run in sessions of their own, so a Ctrl-C at the terminal reaches only the supervisor,
which then stops them in order (agents first, so they can release their claims while the
blackboard still answers). Each child gets SIGTERM if the supervisor dies, and logs to a file.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.procs import die_with_parent

log = logging.getLogger(__name__)

BACKOFF_SECONDS = (1, 2, 5, 10, 30, 60)  # waits before restart n; reset once a child ran for a minute
STABLE_SECONDS = 60.0


@dataclass
class Child:
    name: str
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = True
    group: str = "agents"  # stopped in groups: agents, then services
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0  # crashes in a row
    next_start: float = 0.0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    def __init__(self) -> None:
        self.children: dict[str, Child] = {}
        self.stopping = False

    def add(self, child: Child) -> Child:
        self.children[child.name] = child
        self._start(child)
        return child

    def _start(self, child: Child) -> None:
        child.log.parent.mkdir(parents=True, exist_ok=True)
        with open(child.log, "ab") as out:
            child.process = subprocess.Popen(
                child.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **child.env}, start_new_session=True,
                preexec_fn=functools.partial(die_with_parent, os.getpid(), signal.SIGTERM),
            )  # fmt: skip
        child.started = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.process.pid)

    async def watch(self) -> None:
        """Restart children that exit, with backoff, until `stop`."""
        while not self.stopping:
            now = time.monotonic()
            for child in self.children.values():
                if child.process is None or child.alive:
                    continue
                if child.next_start == 0.0:  # just noticed the exit
                    code = child.process.returncode
                    child.exit_codes.append(code)
                    if not child.restart or (code == 0 and child.group == "agents" and _burst(child)):
                        continue
                    child.failures = 0 if now - child.started > STABLE_SECONDS else child.failures + 1
                    wait = BACKOFF_SECONDS[min(child.failures, len(BACKOFF_SECONDS) - 1)]
                    child.next_start = now + wait
                    log.warning("%s exited with %s; restarting in %d s (see %s)", child.name, code, wait, child.log)
                elif now >= child.next_start:
                    child.next_start = 0.0
                    self._start(child)
            await asyncio.sleep(0.2)

    async def stop(self, group: str | None = None, timeout: float = 30.0) -> None:
        """SIGTERM (a clean drain), then SIGKILL for whatever is still running after `timeout`."""
        chosen = [c for c in self.children.values() if group is None or c.group == group]
        for child in chosen:
            child.restart = False
            if child.alive:
                child.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while any(c.alive for c in chosen) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for child in chosen:
            if child.alive:
                log.warning("%s did not stop within %.0f s: killing it", child.name, timeout)
                child.process.kill()  # type: ignore[union-attr]
                child.process.wait()  # type: ignore[union-attr]

    def kill(self) -> None:
        """Everything, at once (a second Ctrl-C)."""
        self.stopping = True
        for child in self.children.values():
            child.restart = False
            if child.alive:
                child.process.kill()  # type: ignore[union-attr]


def _burst(child: Child) -> bool:
    return "--burst" in child.args


def swarm_command(*args: str) -> list[str]:
    """This Python running the `swarm` CLI: children use the same environment as their parent."""
    return [sys.executable, "-m", "swarm", *args]
