"""Processes of a run: start them, find them, measure their memory, kill every one.

A sandboxed run (harness.jail) lives in its own PID namespace: a process cannot leave it, so the
runner finds every process of the run by the namespace (`/proc/<pid>/ns/pid`), and the kernel
kills them all when its PID 1 ends. Without the sandbox (allow_unsandboxed) the run's processes
share a process group, which setsid() leaves, so each also carries a unique marker in its
environment and the kill sweeps /proc for it; a process that clears its environment escapes that
sweep, one reason an unsandboxed result is labelled untrusted.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER_VAR = "SWARM_RUN_MARKER"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
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


def boot(module: str) -> None:
    """The entry of a run's process: read the spec, tie it to the runner, enter the jail, run `module`.

    Nothing else may happen before the jail: unshare() needs a process with a single thread
    (importing torch starts one), and no code of the run may run unconfined.
    """
    from harness import jail

    spec: dict[str, Any] = json.loads(sys.stdin.read())
    die_with_parent(spec["runner_pid"])
    rules = spec.get("jail")
    spec["sandbox"] = jail.confine(rules["read"], rules["write"], rules["devices"]) if rules else jail.UNTRUSTED
    importlib.import_module(module).main(spec)


@dataclass(frozen=True)
class Usage:
    """A run's process tree at one moment: its pids, their CPU time (reaped children's included) and resident memory."""

    pids: list[int]
    cpu_seconds: float
    rss_mb: float


def process_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, CPU ticks of it and of the children it reaped, resident pages) for every
    live process, from one read of each /proc/<pid>/stat (zombies report no memory and are kept: a
    zombie leader still roots its tree)."""
    table: dict[int, tuple[int, int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            # after the command: state, ppid (field 4 of proc(5)), ... utime..cstime (14-17), ... rss (24)
            table[int(name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]), int(fields[21]))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return table


def descendants(leader: int, table: dict[int, tuple[int, int, int]]) -> list[int]:
    """`leader` (if alive) and every process below it in `table`."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [leader] if leader in table else []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


class RunProcesses:
    """Every live process of one run: those in its PID namespace, and those carrying its marker."""

    def __init__(self, marker: str, leader: int) -> None:
        self.marker = marker
        self.leader = leader
        self.namespace: str | None = None

    def pids(self) -> list[int]:
        """Live processes (not zombies) of the run, this one excepted."""
        if self.namespace is None:
            self.namespace = child_namespace(self.leader)
        needle = f"{MARKER_VAR}={self.marker}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                # A zombie's namespace links are gone and its environ reads empty: never matched.
                if self.namespace is not None and os.readlink(entry / "ns" / "pid") == self.namespace:
                    found.append(int(entry.name))
                elif needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile, or not ours to read
        return found

    def tree(self) -> Usage:
        """The leader and its descendants with their CPU and memory, in one pass over /proc (see the module's docstring)."""
        table = process_table()
        pids = descendants(self.leader, table)
        ticks = sum(table[pid][1] for pid in pids)
        return Usage(pids, ticks / TICKS, sum(table[pid][2] for pid in pids) * PAGE / 2**20)


def child_namespace(pid: int) -> str | None:
    """The PID namespace that `pid` started for its children (the jail's), or None if it has none."""
    try:
        own, children = os.readlink(f"/proc/{pid}/ns/pid"), os.readlink(f"/proc/{pid}/ns/pid_for_children")
    except OSError:
        return None
    return children if children != own else None


def marked_pids(marker: str) -> list[int]:
    """Live processes (not zombies) whose environment carries MARKER_VAR=marker."""
    return RunProcesses(marker, -1).pids()


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


async def kill_run(processes: RunProcesses, grace: float = 2.0) -> None:
    """SIGTERM the group, SIGKILL it after `grace` seconds, then SIGKILL every process of the run.

    The jail's supervisor (the group's leader) answers SIGTERM by killing the namespace's PID 1.
    Returns when no process of the run is left (a process forking while it is killed is caught by
    the next sweep; the loop is bounded so a kernel oddity cannot hang the runner).
    """
    import asyncio  # here: every run process imports this module first, and asyncio is a third of its start

    pgid = processes.leader
    processes.pids()  # learn the namespace while its supervisor still lives
    if _signal_group(pgid, signal.SIGTERM):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while _group_alive(pgid) and loop.time() < deadline and processes.pids():
            await asyncio.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
    for _ in range(200):
        pids = processes.pids()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        await asyncio.sleep(0.02)
