"""The head of a swarm: its nats-server(s), its blackboard service(s), and how nodes get in.

One server by default; three (`servers=3`) form a cluster whose stream and buckets are replicated
three ways, with a standby service beside the leader, so losing one server or one service loses
nothing. Off loopback the head requires credentials (a password by default, or an nkey) and can
serve TLS; it records the swarm's tier and harness fingerprint for joining nodes to check, and
prints the exact command a person runs on another machine to join.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agents.arena import ArenaInfo
from swarm import credentials
from swarm.ground.bus import Bus
from swarm.ground.constants import SCHEMA_VERSION
from swarm.ground.errors import BusError, ConfigError
from swarm.natsserver import Auth, Cluster, NatsServer, Tls
from swarm.ground.settings import Credentials, Settings
from swarm.supervisor import Child, Supervisor, swarm_command

log = logging.getLogger(__name__)

AuthKind = Literal["password", "nkey", "none"]
ROUTE_OFFSET = 2000  # routes between the head's servers listen at client port + 2000 (4222 -> 6222)
KEEP_CHECK_SECONDS = 1.0  # how often the head looks whether its servers still run


@dataclass(frozen=True)
class HeadOptions:
    host: str = "127.0.0.1"  # where the servers listen
    port: int = -1  # the first server's client port; -1: random (loopback only)
    servers: int = 1  # 1, or 3 for a replicated cluster
    auth: AuthKind | None = None  # None: none on loopback, a password elsewhere
    tls: bool = False  # generate a CA and a server certificate
    tls_cert: Path | None = None  # or bring your own
    tls_key: Path | None = None
    advertise: str | None = None  # the address nodes use (default: this machine's, when listening on all)

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


class Head:
    def __init__(self, settings: Settings, options: HeadOptions, config: Path | None = None) -> None:
        if options.servers not in (1, 3):
            raise ConfigError(f"--servers {options.servers}: a head runs 1 server, or 3 as a replicated cluster")
        if not options.loopback and options.port == -1:
            raise ConfigError("a head that other machines reach needs a fixed port: --listen HOST:PORT")
        if not options.loopback and options.auth == "none":
            raise ConfigError("a head off loopback requires credentials: use --auth password or --auth nkey")
        self.settings, self.options, self.config = settings, options, config
        self.dir = settings.dir.resolve()
        self.auth: AuthKind = options.auth or ("none" if options.loopback else "password")
        self.servers: list[NatsServer] = []
        self.credentials = Credentials()  # what a node needs to get in: made by start_servers
        self.urls: list[str] = []

    # --- starting ----------------------------------------------------------------------------------

    def start_servers(self) -> None:
        opts, folder = self.options, self.dir / "credentials"
        auth = None
        if self.auth == "password":
            given = self.settings.nats.password  # SWARM_NATS__PASSWORD: one the launcher shares with the nodes
            self.credentials = Credentials(user=credentials.USER, password=given or credentials.password(folder))
            auth = Auth(user=credentials.USER, password=self.credentials.password)
        elif self.auth == "nkey":
            seed, public = credentials.nkey(folder)
            self.credentials = Credentials(nkey_seed_file=seed)
            auth = Auth(nkeys=(public,))
        tls = None
        if opts.tls_cert is not None or opts.tls:
            if opts.tls_cert is not None:
                cert, key, ca = opts.tls_cert, opts.tls_key, None
            else:
                cert, key, ca = credentials.tls(folder, sorted({self.advertised_host(), "127.0.0.1", "localhost"}))
            if key is None:
                raise ConfigError("--tls-cert needs --tls-key")
            tls = Tls(cert=cert, key=key)
            self.credentials = self.credentials.model_copy(update={"tls_ca": ca})
        route_ports = [opts.port + ROUTE_OFFSET + i for i in range(opts.servers)] if opts.port > 0 else _free_ports(opts.servers)
        routes = tuple(f"nats-route://127.0.0.1:{port}" for port in route_ports)
        for i in range(opts.servers):
            cluster = Cluster("swarm", "127.0.0.1", route_ports[i], routes) if opts.servers > 1 else None
            port = opts.port + i if opts.port > 0 else -1
            server = NatsServer(dir=self.dir / ("nats" if i == 0 else f"nats-{i}"), host=opts.host, port=port,
                                name=f"swarm-{i}", auth=auth, tls=tls, cluster=cluster, fsync=self.settings.nats.fsync)  # fmt: skip
            self.servers.append(server.start())
            server.port = int(server.url.rsplit(":", 1)[1])  # a restart listens where clients reconnect
        self.urls = [server.url for server in self.servers]

    async def keep_servers(self) -> None:
        """Restart a server that exits (SIGTERM, a crash) with the same configuration, port and store,
        within seconds; clients reconnect and JetStream resumes from its store. Until cancelled."""
        while True:
            await asyncio.sleep(KEEP_CHECK_SECONDS)
            for server in self.servers:
                if server.process is None or (code := server.process.poll()) is None:
                    continue  # poll() also reaps an exited one, so no zombie is left
                log.warning("nats-server %s exited with %s; restarting it with the same configuration and store",
                            server.name, code)  # fmt: skip
                try:
                    await asyncio.to_thread(server.start)
                except BusError as exc:
                    log.error("nats-server %s did not restart (trying again): %s", server.name, exc)
                else:
                    log.warning("nats-server %s restarted on %s", server.name, server.url)

    async def configure(self, arena: ArenaInfo, rungs: dict[str, str] | None = None) -> None:
        """Stream and buckets with the head's replication, and what joining nodes must agree with."""
        bus = await Bus.connect(self.local_urls(), name="swarm head", credentials=self.credentials, wait=30)
        try:
            replicas = self.options.servers
            await bus.wait_jetstream()
            await bus.ensure_stream(replicas=replicas)
            await bus.leader_lease(replicas=replicas)
            config = {"tier": arena.tier, "fingerprint": arena.fingerprint, "schema": SCHEMA_VERSION,
                      "ladder": self.settings.board.ladder, "rungs": rungs or {arena.tier: arena.fingerprint}}  # fmt: skip
            await bus.set_swarm_config(config, replicas=replicas)
        finally:
            await bus.close()

    def start_services(self, supervisor: Supervisor, env: dict[str, str]) -> None:
        """The blackboard service, and a standby beside it when there are several servers."""
        base = ["--config", str(self.config)] if self.config else []
        url = ",".join(self.local_urls())
        for i in range(1 if self.options.servers == 1 else 2):
            name = "service" if i == 0 else "service-standby"
            db = self.dir / ("board.duckdb" if i == 0 else f"board-{i}.duckdb")
            args = swarm_command(*base, "-v", "service", "--url", url, "--db", str(db), "--instance", f"{socket.gethostname()}-{name}")
            supervisor.add(Child(name, args, self.dir / "logs" / f"{name}.log", env, group="services"))

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def kill(self) -> None:
        for server in self.servers:
            server.kill()

    # --- how to reach it --------------------------------------------------------------------------

    def local_urls(self) -> list[str]:
        """The servers as this machine reaches them (listening on all interfaces means loopback too)."""
        return [url.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]") for url in self.urls]

    def advertised_host(self) -> str:
        if self.options.advertise:
            return self.options.advertise
        if self.options.host not in ("0.0.0.0", "::"):
            return self.options.host
        return _primary_address()

    def node_urls(self) -> list[str]:
        """The servers as other machines reach them."""
        host = self.advertised_host()
        return [f"nats://{host}:{url.rsplit(':', 1)[1]}" for url in self.urls]

    def join_command(self) -> str:
        """What a person runs on another machine, credentials and files to copy included."""
        url = ",".join(self.node_urls())
        given = self.credentials
        if given.password is not None:
            url = ",".join(credentials.with_password(u, given.password) for u in self.node_urls())
        parts, copies = ["swarm", "join", url], []
        if given.nkey_seed_file is not None:
            copies.append(given.nkey_seed_file)
            parts += ["--nkey", given.nkey_seed_file.name]
        if given.tls_ca is not None:
            copies.append(given.tls_ca)
            parts += ["--tls-ca", given.tls_ca.name]
        command = " ".join(parts)
        if copies:
            files = " ".join(f"{socket.gethostname()}:{path}" for path in copies)
            command = f"scp {files} . && {command}"
        return command

    def write_join_command(self) -> Path:
        """The join command in the swarm directory, private (it may hold the password), for launchers."""
        path = self.dir / "credentials" / "join"
        credentials.write_private(path, (self.join_command() + "\n").encode())
        return path


def _free_ports(count: int) -> list[int]:
    """Ports free on loopback now (the servers bind them a moment later)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _primary_address() -> str:
    """This machine's address on its default route (no packet is sent: UDP connect only picks a route)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere, only used to pick an interface
        return probe.getsockname()[0]
    except OSError:
        return socket.gethostname()
    finally:
        probe.close()
