"""Device slots: one run at a time per device, across every agent process of a node.

An implementer and a replicator on a machine with one GPU (or one CPU slot) share it: each holds
the device's slot only while its run trains. The slot is an exclusive `flock` on a file in the
swarm directory, so it is released by the kernel if its holder dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import time
from pathlib import Path
from types import TracebackType

POLL_SECONDS = 0.05  # how often a waiting agent retries the lock: bounds the idle time it adds


class DeviceSlot:
    def __init__(self, swarm_dir: Path, device: str) -> None:
        self.device = device
        folder = swarm_dir / "devices"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"
        self._fd: int | None = None
        self.waited = 0.0  # seconds spent waiting for the slot last time

    async def __aenter__(self) -> DeviceSlot:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        started = time.monotonic()
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(POLL_SECONDS)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self.waited = fd, time.monotonic() - started
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
