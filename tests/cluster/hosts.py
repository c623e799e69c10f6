"""Hosts for tests: network namespaces on a bridge, standing in for machines.

Each host has its own address (10.77.N.i/24), a default route through the bridge, and a link
that a test can cut and restore. The bridge has an address too, so the test itself (in the root
namespace) reaches every host. Only these addresses and loopback are ever used.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@dataclass
class Host:
    name: str  # the namespace
    ip: str
    link: str  # the bridge side of its veth pair: down cuts the host off
    hostname: str  # what its processes see as the machine's name (a UTS namespace of its own)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, command: list[str], cwd: Path, log: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """A process on this host (in its namespace); output to `log`, or a pipe when None."""
        out = open(log, "w") if log is not None else subprocess.PIPE
        process = subprocess.Popen([*self.prefix(), *command], cwd=cwd, text=True, stdout=out,
                                   stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)  # fmt: skip
        self.processes.append(process)
        return process

    def prefix(self) -> list[str]:
        """What runs a command on this host: in its network namespace, under its own host name."""
        return ["ip", "netns", "exec", self.name, "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname]

    def cut(self) -> None:
        sh("ip", "link", "set", self.link, "down")

    def restore(self) -> None:
        sh("ip", "link", "set", self.link, "up")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        deadline = time.monotonic() + 60
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # and whatever else runs there (detached by a launcher, say)
        found = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in found:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


_CALLS = itertools.count()
_SUBNETS_LOCK = Path("/tmp/swarm-test-subnets.lock")  # test processes running side by side (pytest -n) take turns


def _claim_subnet(bridge: str) -> str:
    """The first 10.77.N/24 no other bridge has, given to `bridge` while no other test process picks one."""
    with open(_SUBNETS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        taken = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
        subnet = next(f"10.77.{n}" for n in range(250) if f" 10.77.{n}." not in taken)
        sh("ip", "addr", "add", f"{subnet}.254/24", "dev", bridge)
    return subnet


@contextmanager
def hosts(names: list[str]) -> Iterator[dict[str, Host]]:
    """Namespaces named after `names`, connected by a bridge; all removed afterwards."""
    # Names new to each call: a namespace outlives `ip netns del` while its last process dies, and
    # with it the bridge side of its link, so the next test's link of the same name would exist.
    tag = f"{os.getpid() % 10000}x{next(_CALLS)}"
    bridge = f"swbr{tag}"
    made: dict[str, Host] = {}
    sh("ip", "link", "add", bridge, "type", "bridge")
    try:
        subnet = _claim_subnet(bridge)
        sh("ip", "link", "set", bridge, "up")
        for i, name in enumerate(names, start=1):
            namespace, link = f"sw{tag}{name}", f"sw{tag}v{i}"
            sh("ip", "netns", "add", namespace)
            made[name] = Host(namespace, f"{subnet}.{i}", link, name)
            sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            sh("ip", "link", "set", link, "master", bridge)
            sh("ip", "link", "set", link, "up")
            inside = ["ip", "netns", "exec", namespace]
            sh(*inside, "ip", "addr", "add", f"{subnet}.{i}/24", "dev", "eth0")
            sh(*inside, "ip", "link", "set", "eth0", "up")
            sh(*inside, "ip", "link", "set", "lo", "up")
            sh(*inside, "ip", "route", "add", "default", "via", f"{subnet}.254")
        yield made
    finally:
        for host in made.values():
            host.stop_all()
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
