"""`swarm export`: the history as one Parquet file, or every table of the board as Parquet files.

A stopped swarm's directory exports every table from one snapshot (`blackboard.queries.export_parquet`).
Everything else is fetched with read-only queries through the reader, a reply at a time, and written
here by an in-memory DuckDB with the column types the board itself gives (`DESCRIBE`): so the one-file
history is the same from a running swarm and from its directory. Through a running service the tables
are read one after another while the swarm goes on, not from one snapshot, and timestamps keep the
millisecond precision of the service's replies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from blackboard import schema
from swarm.ground.errors import BoardError
from swarm.reader import FileReader, Reader

# The runs with what a person asks of them next: the idea's title, the parent patch, the agent's role.
HISTORY = """SELECT r.run, r.arena, r.tier, r.purpose, r.status, r.val_bpb, r.seed, r.reason, r.patch, r.parent,
       r.hypothesis, h.title, r.agent, a.role, r.node, r.device, r.training_seconds, r.total_seconds, r.tokens,
       r.steps, r.params, r.peak_memory_mb, r.synthetic, r.started_at, r.finished_at, r.updated_at
FROM runs r LEFT JOIN hypotheses h USING (hypothesis) LEFT JOIN agents a USING (agent)"""
HISTORY_ORDER = "r.started_at NULLS LAST, r.run"


async def export(reader: Reader, path: Path) -> list[Path]:
    """`FILE.parquet`: the history as one table. Any other path: a directory of every table."""
    if path.suffix == ".parquet":
        partial = await _fetch(reader, HISTORY, HISTORY_ORDER, path)
        partial.replace(path)
        return [path]
    if path.exists() and not path.is_dir():
        raise BoardError(f"{path} is a file: give a directory for every table, or a name ending in .parquet for the history")
    if isinstance(reader, FileReader):
        return reader.export(path)
    written = []
    try:
        for table in schema.TABLES:
            order = schema.KEYED.get(table) or ("seq" if table in schema.APPENDED else "ALL")
            written.append((await _fetch(reader, f"SELECT * FROM {table}", order, path / f"{table}.parquet"), table))
    except BaseException:
        for partial, _ in written:
            partial.unlink(missing_ok=True)
        raise
    for partial, table in written:
        partial.replace(path / f"{table}.parquet")
    return [path / f"{table}.parquet" for _, table in written]


async def _fetch(reader: Reader, select: str, order: str, path: Path) -> Path:
    """Write the rows of `select` beside `path` (renamed into place by the caller, when all went well)."""
    described = await reader.query(f"DESCRIBE {select}")
    types = [(row[0], row[1]) for row in described["rows"]]
    rows = (await reader.table(select, order))["rows"]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        write_parquet(types, rows, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial


def write_parquet(types: list[tuple[str, str]], rows: list[list[Any]], path: Path) -> None:
    """Rows as a Parquet file whose columns have these (name, DuckDB type)s: values the readers return
    (ISO timestamps, lists, JSON text) are cast back by DuckDB as they are appended."""
    conn = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        columns = ", ".join(f"{_name(name)} {kind}" for name, kind in types)
        conn.execute(f"CREATE TABLE export ({columns})")
        if rows:
            with conn.appender("export") as appender:
                appender.append_rows([tuple(row) for row in rows])
        target = str(path.resolve()).replace("'", "''")  # COPY takes no parameter for its file
        conn.execute(f"COPY export TO '{target}' (FORMAT parquet)")
    except duckdb.Error as exc:
        raise BoardError(f"cannot write {path}: {exc}") from exc
    finally:
        conn.close()


def _name(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'
