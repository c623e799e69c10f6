"""The DuckDB projection of the stream: tables that answer queries, rebuilt from the events at will.

`apply_many` applies a batch of (stream sequence, event or raw bytes) in one transaction, the last
applied sequence included, so after a crash the file holds whole batches only and catching up
from `last_seq` continues where it stopped. Sequences at or below `last_seq` are skipped, which
makes applying idempotent; bytes that do not decode are parked (table `parked`) with the reason.

A batch costs a fixed number of statements, not one per event (DuckDB spends a few hundred
microseconds on any statement, more on an upsert): the rows the batch touches are loaded by key,
the events are folded into them in memory in stream order (`blackboard.fold`), and the changed
rows go back with DuckDB's appender (new rows inserted, stored ones updated by key).

Threads: DuckDB connections are not shared between threads. The projection's own connection
applies, from one thread at a time (any thread: the service applies in `asyncio.to_thread` under
a lock). Readers take `cursor()`, a connection of their own to the same database, use it in one
thread and close it. A reader sees only committed batches: never half of one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import duckdb

from blackboard import fold, schema
from blackboard.events import Event, Message, decode
from swarm.ground.errors import DecodeError

Item = tuple[int, Event | Message | bytes]  # a Message is decoded against the subject it came on

REBUILD_BATCH = 5000  # events per transaction when rebuilding
_KEYS_PER_LOOKUP = 1000  # keys per IN (...) list: DuckDB answers these from the primary-key index
_INT64 = (-(2**63), 2**63 - 1)
# No network or extension install behind the service's back: a query naming an unknown function
# must not download an extension. Python variables must never be scanned as tables.
_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False, "python_enable_replacements": False}


class Projection:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.conn = duckdb.connect(str(self.path), config=_CONFIG)
        with self._transaction():
            self._create()
        self._columns = {table: self.conn.table(table).columns for table in schema.TABLES}
        self._last_seq = self._read_last_seq()

    def __enter__(self) -> Projection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    @property
    def last_seq(self) -> int:
        """The last stream sequence applied or parked; catch up from the one after it."""
        return self._last_seq

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own to this database, for one reader thread; close it when done."""
        return self.conn.cursor()

    # --- applying -----------------------------------------------------------------------------

    def apply(self, event: Event, seq: int) -> bool:
        """Apply one event; False when its sequence was already applied."""
        return self.apply_many([(seq, event)]) == 1

    def apply_many(self, items: Iterable[Item]) -> int:
        """Apply a batch in one transaction; returns how many items were new (applied or parked).

        Items come in stream order; one at or below the last applied sequence is skipped.
        """
        events: list[tuple[int, Event]] = []
        parked: list[dict[str, Any]] = []
        last = self._last_seq
        for seq, item in items:
            if seq <= last:
                continue
            last = seq
            if isinstance(item, Event):
                events.append((seq, item))
                continue
            data, subject = (item.data, item.subject) if isinstance(item, Message) else (item, None)
            try:
                events.append((seq, decode(data, subject)))
            except DecodeError as exc:
                parked.append({"seq": seq, "error": str(exc), "raw": bytes(data)})
        if last == self._last_seq:
            return 0
        with self._transaction():
            rows = self._load([event for _, event in events])
            fold.fold_all(rows, events)
            self._append("events", [_event_row(seq, event) for seq, event in events])
            self._append("parked", parked)
            for table in schema.APPENDED:
                self._append(table, rows.appended[table])
            for table, keys in rows.changed.items():
                stored = rows.stored[table]
                self._append(table, [rows.keyed[table][key] for key in sorted(keys - stored)])
                self._update(table, [rows.keyed[table][key] for key in sorted(keys & stored)])
            self._copy_patch_fields(rows.submitted)
            self.conn.execute("UPDATE meta SET last_seq = ?", [last])
        self._last_seq = last
        return len(events) + len(parked)

    def rebuild(self, items: Iterable[Item]) -> None:
        """Drop every table, recreate the schema and apply `items` from scratch, in batches."""
        with self._transaction():
            for statement in schema.drop_statements():
                self.conn.execute(statement)
            self._create()
        self._last_seq = 0
        source = iter(items)
        while batch := list(islice(source, REBUILD_BATCH)):
            self.apply_many(batch)

    # --- comparing ------------------------------------------------------------------------------

    def differences(self, other: Projection) -> list[str]:
        """What differs between two projections, table by table; empty when they hold the same rows."""
        found = []
        for table in schema.TABLES:
            query = f"SELECT * FROM {table} ORDER BY ALL"
            mine, theirs = self.cursor(), other.cursor()
            try:
                difference = _first_difference(mine.execute(query), theirs.execute(query))
            finally:
                mine.close()
                theirs.close()
            if difference is not None:
                found.append(f"{table}: {difference}")
        return found

    # --- inside ---------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.conn.begin()
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()

    def _create(self) -> None:
        tables = {name for (name,) in self.conn.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
        if "meta" in tables:
            version = self.conn.execute("SELECT max(schema_version) FROM meta").fetchone()
            if version is not None and version[0] != schema.PROJECTION_VERSION:
                # Made by other code: the file is disposable, the stream rebuilds it.
                for statement in schema.drop_statements():
                    self.conn.execute(statement)
        for statement in schema.create_statements():
            self.conn.execute(statement)
        self.conn.execute(
            "INSERT INTO meta SELECT ?, 0 WHERE NOT EXISTS (SELECT 1 FROM meta)", [schema.PROJECTION_VERSION]
        )

    def _read_last_seq(self) -> int:
        row = self.conn.execute("SELECT last_seq FROM meta").fetchone()
        return int(row[0]) if row else 0

    def _load(self, events: Sequence[Event]) -> fold.Rows:
        """The stored rows the events touch. The patches of those runs (a run takes its hypothesis and
        parent from its patch, even for an event that names only the run). Claims before work (a
        claim's end changes its work), then the claims holding that work (closing work ends its claim)."""
        rows = fold.Rows()
        keys = fold.keys_to_load(events)
        order = ("agents", "arenas", "hypotheses", "patches", "runs", "reviews", "claims")
        for table in order:
            rows.keyed[table] = self._select(table, keys[table])
        patches = fold.patches_of(rows.keyed["runs"].values()) - rows.keyed["patches"].keys()
        rows.keyed["patches"].update(self._select("patches", patches))
        work = keys["work"] | fold.works_of(rows.keyed["claims"].values())
        rows.keyed["work"] = self._select("work", work)
        more = fold.claims_of(rows.keyed["work"].values()) - rows.keyed["claims"].keys()
        rows.keyed["claims"].update(self._select("claims", more))
        for table, found in rows.keyed.items():
            rows.stored[table] = set(found)
        return rows

    def _select(self, table: str, keys: set[str]) -> dict[str, fold.Row]:
        key, found = schema.KEYED[table], {}
        ordered = sorted(keys)
        for start in range(0, len(ordered), _KEYS_PER_LOOKUP):
            chunk = ordered[start : start + _KEYS_PER_LOOKUP]
            result = self.conn.execute(f"SELECT * FROM {table} WHERE {key} IN ({', '.join('?' * len(chunk))})", chunk)
            names = [d[0] for d in result.description]
            for values in result.fetchall():
                row = dict(zip(names, values))
                found[row[key]] = row
        return found

    def _append(self, table: str, rows: list[fold.Row]) -> None:
        if rows:
            with self.conn.appender(table) as appender:
                appender.append_rows(self._values(table, rows))

    def _update(self, table: str, rows: list[fold.Row]) -> None:
        """Rows known to be stored: an update by key costs less than an upsert, which must look first."""
        if rows:
            with self.conn.appender(table, action="update", key=[schema.KEYED[table]]) as appender:
                appender.append_rows(self._values(table, rows))

    def _values(self, table: str, rows: list[fold.Row]) -> list[tuple[Any, ...]]:
        columns = self._columns[table]
        return [tuple(_storable(row.get(column)) for column in columns) for row in rows]

    def _copy_patch_fields(self, patches: set[str]) -> None:
        """Runs stored before their patch was submitted get its hypothesis and parent now."""
        ordered = sorted(patches)
        for start in range(0, len(ordered), _KEYS_PER_LOOKUP):
            chunk = ordered[start : start + _KEYS_PER_LOOKUP]
            self.conn.execute(
                f"""UPDATE runs SET hypothesis = p.hypothesis, parent = p.parent FROM patches p
                    WHERE runs.patch = p.patch AND p.patch IN ({', '.join('?' * len(chunk))})
                      AND (runs.hypothesis IS DISTINCT FROM p.hypothesis OR runs.parent IS DISTINCT FROM p.parent)""",
                chunk,
            )


def _event_row(seq: int, event: Event) -> fold.Row:
    return {
        "seq": seq, "id": event.id, "kind": event.kind, "happened_at": fold.timestamp(event.at),
        "published_by": event.by, "payload": fold.to_json(event.model_dump()),
    }  # fmt: skip


def _storable(value: Any) -> Any:
    """What a column can hold of an event's value: NaN and inf as NULL (as in the JSON payload), and
    integers beyond BIGINT (msgpack carries up to 2**64 - 1) as NULL rather than a failed batch."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        return None
    return value


def _first_difference(mine: duckdb.DuckDBPyConnection, theirs: duckdb.DuckDBPyConnection) -> str | None:
    index = 0
    while True:
        a, b = mine.fetchmany(1000), theirs.fetchmany(1000)
        for row_a, row_b in zip(a, b):
            if row_a != row_b:  # no NaN is stored (see _storable), so == is equality here
                return f"row {index} differs: {row_a!r} != {row_b!r}"
            index += 1
        if len(a) != len(b):
            return f"one side ends after {index} rows, the other has more"
        if not a:
            return None
