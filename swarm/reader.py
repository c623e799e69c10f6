"""Reading a swarm's board: from its running service, or from its directory once it stopped.

Both backends answer with the same functions of `blackboard.queries`: the service runs them on its
projection and sends the result over NATS as msgpack; the file backend runs them on a read-only
connection to the directory's `board.duckdb` (or to a Parquet export of it) and passes the result
through the same msgpack round trip. So a command gets the same answer either way, errors included,
and the CLI never knows which one it talks to.

DuckDB allows one process per file: while a swarm runs, its service holds `board.duckdb`, so a
directory whose nats-server is up (its ports file names a server that accepts) is read through
that service instead.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import msgpack

from blackboard import queries, schema
from blackboard.client import Board
from swarm.ground import aio
from swarm.ground.bus import Bus
from swarm.ground.settings import Credentials
from swarm.credentials import left_by_head, split_urls
from swarm.ground.errors import BoardError, BusError, ServiceUnavailable
from swarm.natsserver import accepts, client_urls

PAGE_ROWS = queries.MAX_ROWS
CONNECT_SECONDS = 3.0  # a wrong URL is said soon; a server restarting is waited for a little
RETRY_SECONDS = 5.0  # a request with no service answering is retried this long (a leader handover)
# No extension is installed or loaded behind the reader's back, and no Python variable is a table.
_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False, "autoload_known_extensions": False, "python_enable_replacements": False}  # fmt: skip
T = TypeVar("T")


class Reader(ABC):
    """The read verbs of the blackboard, answered by one backend."""

    source: str  # where the answers come from, for a person
    live: bool  # a running service answers (agents' status lines can be heard)

    @abstractmethod
    async def query(self, sql: str, limit: int = queries.MAX_ROWS) -> queries.Result: ...

    @abstractmethod
    async def history(self, **filters: Any) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def show(self, id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def lineage(self, id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def bests(self) -> list[dict[str, Any]]:
        """Each arena's current best (`queries.best_per_arena`)."""

    async def close(self) -> None:
        pass

    async def table(self, select: str, order: str) -> queries.Result:
        """Every row of `select` (no ORDER BY of its own) in `order` (which must order the rows
        completely), a reply at a time: a reply carries at most `PAGE_ROWS` rows and half a MiB."""
        columns: list[str] = []
        rows: list[list[Any]] = []
        while True:
            page = await self.query(f"{select} ORDER BY {order} LIMIT {PAGE_ROWS} OFFSET {len(rows)}", limit=PAGE_ROWS)
            columns = page["columns"]
            rows += page["rows"]
            if not page["truncated"] and len(page["rows"]) < PAGE_ROWS:
                return {"columns": columns, "rows": rows, "truncated": False}
            if not page["rows"]:
                raise BoardError(f"row {len(rows)} of that query is larger than one reply can carry")


class ServiceReader(Reader):
    """Asks the blackboard service over NATS, with the agents' `Board` client."""

    def __init__(self, bus: Bus, source: str) -> None:
        self.bus, self.source, self.live = bus, source, True
        self.board = Board(bus, agent=f"swarm-reader-{socket.gethostname()}", retry_seconds=RETRY_SECONDS)

    async def _ask(self, verb: str, call: Callable[[], Any]) -> Any:
        try:
            return await call()
        except ServiceUnavailable:
            raise
        except BoardError as exc:
            # The bus prefixes the verb to the service's message; the file backend's errors have none.
            raise BoardError(str(exc).removeprefix(f"{verb}: ")) from exc

    async def query(self, sql: str, limit: int = queries.MAX_ROWS) -> queries.Result:
        return await self._ask("query", lambda: self.board.query(sql, limit=limit))

    async def history(self, **filters: Any) -> list[dict[str, Any]]:
        return await self._ask("history", lambda: self.board.history(**filters))

    async def show(self, id: str) -> dict[str, Any] | None:
        return await self._ask("show", lambda: self.board.show(id))

    async def lineage(self, id: str) -> dict[str, Any] | None:
        return await self._ask("lineage", lambda: self.board.lineage(id))

    async def bests(self) -> list[dict[str, Any]]:
        stats = await self._ask("stats", self.board.stats)
        return [{k: v for k, v in best.items() if k != "lineage"} for best in stats.get("bests", [])]

    async def stats(self) -> dict[str, Any]:
        """The service's own view (`blackboard.service`): leader, queues in memory, run budget."""
        return await self._ask("stats", self.board.stats)

    async def close(self) -> None:
        await self.bus.close()


class FileReader(Reader):
    """Runs the same named queries on a read-only DuckDB connection."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, source: str) -> None:
        self.conn, self.source, self.live = conn, source, False

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        cursor = self.conn.cursor()
        try:
            answer = fn(cursor, *args, **kwargs)
        except duckdb.Error as exc:  # the service would have said so in its reply
            raise BoardError(f"internal error: {type(exc).__name__}: {exc}") from exc
        finally:
            cursor.close()
        # What the service's reply would carry: tuples become lists, nothing else changes.
        return msgpack.unpackb(msgpack.packb(answer, use_bin_type=True), raw=False)

    async def query(self, sql: str, limit: int = queries.MAX_ROWS) -> queries.Result:
        return self._run(queries.run_query, sql, limit=limit)

    async def history(self, **filters: Any) -> list[dict[str, Any]]:
        return self._run(queries.history, **{k: v for k, v in filters.items() if v is not None})

    async def show(self, id: str) -> dict[str, Any] | None:
        return self._run(queries.show, id)

    async def lineage(self, id: str) -> dict[str, Any] | None:
        return self._run(queries.lineage, id)

    async def bests(self) -> list[dict[str, Any]]:
        return self._run(queries.best_per_arena)

    def export(self, directory: Path) -> list[Path]:
        """Every table as Parquet, from one snapshot (`queries.export_parquet`)."""
        cursor = self.conn.cursor()
        try:
            return queries.export_parquet(cursor, directory)
        finally:
            cursor.close()

    async def close(self) -> None:
        self.conn.close()


# --- choosing a backend ---------------------------------------------------------------------------


def read(directory: Path, url: str | None, credentials: Credentials, work: Callable[[Reader], Awaitable[T]]) -> T | None:
    """Open the reader `open_reader` chooses, run `work` with it, close it; None if a signal stopped it."""

    async def main() -> T:
        reader = await open_reader(directory, url, credentials)
        try:
            return await work(reader)
        finally:
            await reader.close()

    return aio.run(main)


async def open_reader(directory: Path, url: str | None, credentials: Credentials) -> Reader:
    """The service at `url`; else the swarm in `directory`: its service while it runs, its file after."""
    if url:
        urls, credentials = split_urls(url, credentials)  # the shown URL has no password: the settings may
        return await _connect(urls, credentials, f"the service at {','.join(urls)}")
    directory = directory.expanduser()
    if not directory.is_dir():
        raise BoardError(f"no swarm directory at {directory}: pass --dir DIR of a swarm, or --url URL of a running one")
    urls = running_urls(directory)
    served: str | None = None
    if urls:
        # a head's own directory: what it made for its nodes lets its machine in too
        left = left_by_head(directory / "credentials")
        credentials = credentials.model_copy(update={key: value for key, value in left if getattr(credentials, key) is None})
        try:
            reader = await _connect(urls, credentials, f"the running swarm in {directory} (NATS at {', '.join(urls)})")
        except BusError as exc:
            served = str(exc)
        else:
            if await _answers(reader):
                return reader
            await reader.close()  # its server is up but its service is not: the file may be free
            served = f"no blackboard service answers at {', '.join(urls)}"
    db = directory / "board.duckdb"
    if db.is_file():
        return FileReader(_open_file(db, served), f"{db}")
    if (directory / "meta.parquet").is_file():
        return FileReader(queries.open_export(directory), f"the export in {directory}")
    if served:
        raise BoardError(f"cannot read the swarm in {directory}: {served}, and it has no board.duckdb")
    raise BoardError(f"{directory} holds no board (no board.duckdb, no Parquet export): is it a swarm directory?")


def running_urls(directory: Path) -> list[str]:
    """The client URLs in the ports files of the swarm's nats-server(s) that accept connections."""
    # nats/, and nats-1/ ... of a head's cluster
    found = [url for ports in sorted(directory.glob("nats*/ports/*.ports")) for url in client_urls(ports)]
    return [url for url in dict.fromkeys(found) if accepts(url)]


async def _answers(reader: ServiceReader) -> bool:
    """Whether a blackboard service answers at all (one try: no waiting out a retry window)."""
    try:
        await reader.bus.request("query", {"sql": "SELECT 1", "limit": 1}, timeout=2.0)
    except ServiceUnavailable:
        return False
    except BoardError:
        return True  # it answered, if only to refuse
    return True


async def _connect(servers: str | list[str], credentials: Credentials, source: str) -> ServiceReader:
    urls = servers.split(",") if isinstance(servers, str) and "," in servers else servers
    bus = await Bus.connect(urls, name="swarm reader", credentials=credentials, wait=CONNECT_SECONDS)
    return ServiceReader(bus, source)


def _open_file(db: Path, served: str | None) -> duckdb.DuckDBPyConnection:
    try:
        conn = duckdb.connect(str(db), read_only=True, config=_CONFIG)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise BoardError(f"cannot open {db}: {exc}") from exc
        why = served or "no nats-server of it is listening (no ports file)"
        raise BoardError(f"cannot read {db}: another process holds it (a running swarm's service?) and {why}; "
                         "pass --url URL of its NATS server") from exc  # fmt: skip
    except duckdb.Error as exc:
        raise BoardError(f"cannot open {db}: {exc}") from exc
    try:
        tables = {name for (name,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        version = conn.execute("SELECT max(schema_version) FROM meta").fetchone() if "meta" in tables else None
    except duckdb.Error as exc:
        conn.close()
        raise BoardError(f"cannot read {db}: {exc}") from exc
    if version is None or version[0] != schema.PROJECTION_VERSION:
        conn.close()
        made = "not a board" if version is None else f"a board of projection version {version[0]}"
        raise BoardError(f"{db} is {made}, this swarm reads version {schema.PROJECTION_VERSION}: "
                         "`swarm up` on its directory rebuilds it from the stream")  # fmt: skip
    return conn
