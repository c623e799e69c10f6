"""Processes of a run: find them by their marker, measure their memory, kill every one.

A run's processes share a process group, but a child that calls setsid() leaves it. So every
process of a run also carries a unique marker in its environment (inherited by everything it
starts, unless a process deliberately clears its environment, which the guard refuses), and the
kill sweeps /proc for it after killing the group.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

MARKER_VAR = "SWARM_RUN_MARKER"
PAGE = os.sysconf("SC_PAGE_SIZE")
PR_SET_PDEATHSIG = 1  # prctl option: the signal to get when the parent dies


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when `parent` dies, even by SIGKILL (Linux).

    A run must not outlive the agent that started it, keeping a GPU busy with nobody to read the
    result (runs call this first thing, before any agent code, and get SIGKILL); a server must not
    outlive the swarm that started it (called before exec, with SIGTERM so it shuts down cleanly).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before the call: the kernel will never send it
        os.kill(os.getpid(), sig)


def marked_pids(marker: str) -> list[int]:
    """Live processes (not zombies) whose environment carries MARKER_VAR=marker."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            # A zombie's environ reads empty, so it is never matched (nor needs killing).
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes, in MiB."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total * PAGE / 2**20


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


async def kill_run(pgid: int | None, marker: str, grace: float = 2.0) -> None:
    """SIGTERM the group, SIGKILL it after `grace` seconds, then SIGKILL every marked process.

    Returns when no process carrying the marker is left (a process forking while it is killed
    is caught by the next sweep; the loop is bounded so a kernel oddity cannot hang the runner).
    """
    if pgid is not None and _signal_group(pgid, signal.SIGTERM):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while _group_alive(pgid) and loop.time() < deadline and marked_pids(marker):
            await asyncio.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
    for _ in range(200):
        pids = marked_pids(marker)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        await asyncio.sleep(0.02)
