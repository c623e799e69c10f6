"""Reading the board: read-only SQL, the named queries agents and the CLI ask, Parquet export.

Every function takes a DuckDB cursor (a projection's `cursor()`, or `open_export` of a snapshot)
and returns plain data that travels over NATS as msgpack: timestamps become ISO 8601 strings in UTC
to the millisecond with a "Z" ("2025-01-31T12:00:00.000Z"), decimals floats, intervals seconds,
and integers beyond 64 bits strings. Filters are parameters, never text pasted into SQL.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TypedDict

import duckdb
import msgpack

from blackboard import fold, schema
from blackboard.readonly import QueryRefused, check_read_only
from harness.runner import FAILED as RUN_FAILED
from swarm.ground.errors import BoardError

__all__ = ["QueryRefused", "QueryFailed", "check_read_only", "run_query", "history", "lineage", "best_per_arena",
           "show", "stats", "export_parquet", "open_export"]  # fmt: skip

MAX_ROWS = 10_000
MAX_REPLY_BYTES = 512 * 1024  # a reply must fit a NATS message (1 MiB by default) with room to spare
FAILED = RUN_FAILED


class QueryFailed(BoardError):
    """A read-only query that ran and failed: a wrong column, a type error, over its time limit."""


class Result(TypedDict):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool  # more rows (or bytes) than the limits let through


def run_query(cursor: duckdb.DuckDBPyConnection, sql: str, *, limit: int = 1000, timeout: float = 10.0,
              max_bytes: int = MAX_REPLY_BYTES) -> Result:  # fmt: skip
    """Run one read-only SELECT (see `blackboard.readonly`) in a transaction that is always rolled
    back, stopping after `limit` rows, `max_bytes` of encoded rows or `timeout` seconds."""
    query = check_read_only(sql)
    limit = max(0, min(limit, MAX_ROWS))
    timer = threading.Timer(timeout, cursor.interrupt)  # interrupt() is DuckDB's way to stop a running query
    cursor.begin()
    try:
        timer.start()
        result = cursor.execute(query)  # streams: rows are computed as they are fetched
        columns = [d[0] for d in result.description or []]
        fetched = result.fetchmany(limit + 1)
    except duckdb.InterruptException as exc:
        raise QueryFailed(f"query stopped: it ran over its {timeout:g} s limit") from exc
    except duckdb.Error as exc:
        raise QueryFailed(f"query failed: {exc}") from exc
    finally:
        timer.cancel()
        cursor.rollback()
    rows, size = [], 0
    for row in fetched[:limit]:
        safe = [safe_value(v) for v in row]
        size += len(msgpack.packb(safe, use_bin_type=True))
        if size > max_bytes:
            break
        rows.append(safe)
    return {"columns": columns, "rows": rows, "truncated": len(fetched) > len(rows)}


def safe_value(value: Any) -> Any:
    """A value msgpack can carry, meaning the same thing (see the module docstring)."""
    if value is None or isinstance(value, (bool, str, bytes, float)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, dt.datetime):
        utc = value.astimezone(dt.timezone.utc) if value.tzinfo else value
        return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [safe_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): safe_value(v) for k, v in value.items()}
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def _records(cursor: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    result = cursor.execute(sql, params or [])
    names = [d[0] for d in result.description or []]
    return [{name: safe_value(v) for name, v in zip(names, row)} for row in result.fetchall()]


def _record(cursor: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> dict[str, Any] | None:
    found = _records(cursor, sql, params)
    return found[0] if found else None


# --- named queries ------------------------------------------------------------------------------


def history(cursor: duckdb.DuckDBPyConnection, *, status: str | None = None, role: str | None = None,
            agent: str | None = None, arena: str | None = None, since: float | None = None,
            until: float | None = None, limit: int = 50) -> list[dict[str, Any]]:  # fmt: skip
    """Runs, newest first (by their latest event), with their hypothesis' title, agent role and node.

    `status` is a run status, or "failed" for any failure; `since`/`until` are unix seconds.
    """
    _check_types(status=(status, str), role=(role, str), agent=(agent, str), arena=(arena, str),
                 since=(since, (int, float)), until=(until, (int, float)), limit=(limit, int))  # fmt: skip
    where, params = [], []
    if status is not None:
        where.append("list_contains(?, status)")
        params.append(list(FAILED) if status == "failed" else [status])
    if role is not None:
        # The role's agents first, from the small agents table: a semi-join inside the scan of runs
        # would cost the top-N its speed.
        agents = [row[0] for row in cursor.execute("SELECT agent FROM agents WHERE role = ?", [role]).fetchall()]
        where.append("list_contains(?, agent)")
        params.append(agents if agent is None else [a for a in agents if a == agent])
    elif agent is not None:
        where.append("agent = ?")
        params.append(agent)
    if arena is not None:
        where.append("arena = ?")
        params.append(arena)
    if since is not None:
        where.append("updated_at >= ?")
        params.append(fold.timestamp(since))
    if until is not None:
        where.append("updated_at < ?")
        params.append(fold.timestamp(until))
    # The newest runs' ids first, reading only the columns filtered and sorted on (DuckDB's top-N
    # over narrow rows), then the whole rows of those few, with their titles and roles.
    return _records(
        cursor,
        f"""WITH recent AS (
                SELECT run FROM runs {"WHERE " + " AND ".join(where) if where else ""}
                ORDER BY updated_at DESC NULLS LAST, run DESC LIMIT ?)
            SELECT r.run, r.updated_at, r.status, r.val_bpb, r.purpose, r.seed, r.arena, r.tier, r.patch, r.parent,
                   r.hypothesis, h.title, r.agent, a.role, r.node, r.device, r.reason, r.started_at, r.finished_at,
                   r.tokens, r.training_seconds, r.tokens_per_second, r.mfu, r.epochs, r.peak_memory_mb, r.sandbox
            FROM recent JOIN runs r USING (run) LEFT JOIN hypotheses h USING (hypothesis) LEFT JOIN agents a USING (agent)
            ORDER BY r.updated_at DESC NULLS LAST, r.run DESC""",
        [*params, max(0, min(limit, MAX_ROWS))],
    )


def _check_types(**filters: tuple[Any, type | tuple[type, ...]]) -> None:
    """Filters arrive from the wire: a wrong type is the asker's mistake, said plainly."""
    for name, (value, kind) in filters.items():
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise QueryFailed(f"history: {name} must be {getattr(kind, '__name__', 'a number')}, not {value!r}")


def lineage(cursor: duckdb.DuckDBPyConnection, id: str) -> dict[str, Any] | None:
    """For a run or a patch: its chain of patches back to the baseline, each with its hypothesis'
    title and its results, and the promotions along the way. None for an unknown id."""
    start = _record(cursor, "SELECT patch FROM runs WHERE run = ? UNION ALL SELECT patch FROM patches WHERE patch = ?", [id, id])
    if start is None or start["patch"] is None:
        return None
    chain = _records(
        cursor,
        """WITH RECURSIVE chain(patch, depth, seen) AS (
               SELECT ?, 0, [?]
               UNION ALL
               SELECT p.parent, c.depth + 1, list_append(c.seen, p.parent) FROM chain c JOIN patches p USING (patch)
               WHERE p.parent IS NOT NULL AND NOT list_contains(c.seen, p.parent))  -- a cycle stops the walk
           SELECT c.depth, c.patch, p.parent, p.status, p.arena, p.author, p.hypothesis, h.title, p.submitted_at,
                  s.runs, s.ok, s.best_val_bpb, s.mean_val_bpb
           FROM chain c LEFT JOIN patches p USING (patch) LEFT JOIN hypotheses h USING (hypothesis)
           LEFT JOIN (SELECT patch, count(*) AS runs, count(*) FILTER (WHERE status = 'ok') AS ok,
                             min(val_bpb) FILTER (WHERE status = 'ok') AS best_val_bpb,
                             avg(val_bpb) FILTER (WHERE status = 'ok') AS mean_val_bpb
                      FROM runs WHERE patch IN (SELECT patch FROM chain) GROUP BY patch) s USING (patch)
           ORDER BY c.depth""",
        [start["patch"], start["patch"]],
    )
    patches = [row["patch"] for row in chain]
    promotions = _records(
        cursor,
        f"""SELECT arena, patch, mean, std, n, previous, previous_mean, threshold, reason, promoted_at FROM bests
            WHERE patch IN ({', '.join('?' * len(patches))}) ORDER BY seq""",
        patches,
    )
    return {"id": id, "patches": chain, "promotions": promotions}


def best_per_arena(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Each arena's current best: its mean, std and n, when it was promoted, its patch and idea."""
    return _records(
        cursor,
        """SELECT b.arena, b.patch, b.mean, b.std, b.n, b.promoted_at, b.previous, b.previous_mean, b.threshold,
                  b.reason, p.hypothesis, h.title
           FROM current_bests b LEFT JOIN patches p USING (patch) LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis
           ORDER BY b.arena""",
    )


def show(cursor: duckdb.DuckDBPyConnection, id: str) -> dict[str, Any] | None:
    """A hypothesis, patch or run by id: its record and what hangs off it. None for an unknown id."""
    if (run := _record(cursor, "SELECT * FROM runs WHERE run = ?", [id])) is not None:
        patch = _record(cursor, "SELECT patch, status, parent, hypothesis, diff FROM patches WHERE patch = ?", [run["patch"]])
        return {"kind": "run", "record": run, "patch": patch, "reviews": _reviews(cursor, run["patch"]),
                "claims": _claims(cursor, "w.work = ?", [run["work"]])}  # fmt: skip
    if (patch := _record(cursor, "SELECT * FROM patches WHERE patch = ?", [id])) is not None:
        return {
            "kind": "patch", "record": patch, "runs": _runs(cursor, "patch = ?", [id]), "reviews": _reviews(cursor, id),
            "claims": _claims(cursor, "w.ref = ? OR w.work = ?", [id, patch["work"]]),
            "promotions": _records(cursor, "SELECT * FROM bests WHERE patch = ? ORDER BY seq", [id]),
            "replications": _records(cursor, "SELECT * FROM replications WHERE patch = ? ORDER BY seq", [id]),
            "audits": _records(cursor, "SELECT * FROM audits WHERE patch = ? ORDER BY seq", [id]),
        }  # fmt: skip
    if (hypothesis := _record(cursor, "SELECT * FROM hypotheses WHERE hypothesis = ?", [id])) is not None:
        hypothesis["intent"] = json.loads(hypothesis["intent"]) if hypothesis["intent"] else {}
        return {
            "kind": "hypothesis", "record": hypothesis,
            "patches": _records(cursor, "SELECT patch, status, reason, duplicate_of, submitted_at FROM patches WHERE hypothesis = ? ORDER BY submitted_at", [id]),
            "runs": _runs(cursor, "hypothesis = ?", [id]), "claims": _claims(cursor, "w.ref = ?", [id]),
        }  # fmt: skip
    return None


DESK_TRIALS = 400  # the latest trials a desk read details: ~1.6 KB each at most, within one 1 MB reply


def desk(cursor: duckdb.DuckDBPyConnection, arena: str) -> dict[str, Any]:
    """What an ideator reads besides the codes: per patch tried (the latest DESK_TRIALS), its outcome,
    its review verdicts, the harness's run metrics, its rationale and the start of its diff; the ideas
    waiting or being implemented; the ideas and patches refused as duplicates; and the arena's latest
    lab-notebook note."""
    trials = _records(
        cursor,
        """WITH finished AS (SELECT * FROM runs WHERE arena = ? AND status <> 'running'),
                verdicts AS (SELECT patch, arg_max(outcome, seq) AS outcome, arg_max(explanation, seq) AS explanation
                             FROM replications WHERE arena = ? GROUP BY patch),
                rejections AS (SELECT patch, list(left(array_to_string(reasons, '; '), 200)) AS rejected
                               FROM reviews WHERE verdict = 'reject' GROUP BY patch),
                promotions AS (SELECT DISTINCT patch, true AS promoted FROM bests WHERE arena = ?)
           SELECT * FROM (
           SELECT p.patch, p.parent, h.title, left(h.rationale, 240) AS rationale, left(p.diff, 400) AS diff, v.outcome,
                  left(v.explanation, 200) AS explanation, j.rejected,
                  coalesce(m.promoted, false) AS promoted,
                  count(*) FILTER (r.status = 'ok') AS n, avg(r.val_bpb) FILTER (r.status = 'ok') AS val_bpb,
                  stddev_samp(r.val_bpb) FILTER (r.status = 'ok') AS std,
                  avg(r.steps) FILTER (r.status = 'ok') AS steps, avg(r.tokens) FILTER (r.status = 'ok') AS tokens,
                  avg(r.training_seconds) FILTER (r.status = 'ok') AS training_seconds,
                  max(r.params) AS params, max(r.peak_memory_mb) AS peak_memory_mb,
                  arg_max(r.status, r.updated_at) AS last_status, arg_max(r.steps, r.updated_at) AS last_steps,
                  arg_max(r.training_seconds, r.updated_at) AS last_seconds, min(r.started_at) AS started_at
           FROM finished r JOIN patches p ON p.patch = r.patch
           LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis
           LEFT JOIN verdicts v ON v.patch = p.patch LEFT JOIN rejections j ON j.patch = p.patch
           LEFT JOIN promotions m ON m.patch = p.patch
           GROUP BY ALL ORDER BY started_at DESC, p.patch DESC LIMIT ?) ORDER BY started_at, patch""",
        [arena, arena, arena, DESK_TRIALS],
    )
    pending = _records(
        cursor,
        """SELECT h.hypothesis, h.parent, h.title, h.rationale, h.intent, bool_or(w.status = 'claimed') AS in_flight
           FROM hypotheses h LEFT JOIN work w ON w.ref = h.hypothesis AND w.work_kind = 'implement'
           WHERE h.arena = ? AND (h.status = 'proposed' OR w.status IN ('queued', 'claimed'))
           GROUP BY ALL ORDER BY min(h.proposed_at), h.hypothesis""",
        [arena],
    )
    refused = _records(
        cursor,
        """SELECT * FROM (
             SELECT h.title, h.reason, h.duplicate_of, h.decided_at FROM hypotheses h
             WHERE h.arena = ? AND h.status = 'rejected'
             UNION ALL
             SELECT h.title, p.reason, p.duplicate_of, p.decided_at FROM patches p
             LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis WHERE p.arena = ? AND p.status = 'refused')
           ORDER BY decided_at DESC LIMIT 20""",
        [arena, arena],
    )
    return {"trials": trials, "pending": pending, "refused": refused, "note": latest_note(cursor, arena)}


def latest_note(cursor: duckdb.DuckDBPyConnection, arena: str) -> dict[str, Any] | None:
    """The arena's latest lab-notebook note: its text, the trials it covers, who wrote it and when."""
    return _record(cursor, "SELECT arena, trials, note, written_by, written_at FROM notes WHERE arena = ? "
                           "ORDER BY seq DESC LIMIT 1", [arena])  # fmt: skip


def notes(cursor: duckdb.DuckDBPyConnection, arena: str | None = None) -> list[dict[str, Any]]:
    """Every lab-notebook note, oldest first, of one arena or all."""
    where, params = ("WHERE arena = ?", [arena]) if arena else ("", [])
    return _records(cursor, f"SELECT arena, trials, note, written_by, written_at FROM notes {where} ORDER BY seq", params)


def _runs(cursor: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> list[dict[str, Any]]:
    return _records(
        cursor,
        f"""SELECT run, patch, purpose, seed, status, val_bpb, reason, agent, node, started_at, finished_at
            FROM runs WHERE {where} ORDER BY updated_at, run""",
        params,
    )


def _reviews(cursor: duckdb.DuckDBPyConnection, patch: str | None) -> list[dict[str, Any]]:
    return _records(cursor, "SELECT review, reviewer, verdict, reasons, reviewed_at FROM reviews WHERE patch = ? ORDER BY reviewed_at", [patch])


def _claims(cursor: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> list[dict[str, Any]]:
    return _records(
        cursor,
        f"""SELECT w.work, w.work_kind, w.status AS work_status, c.claim, c.agent, c.status, c.done, c.granted_at,
                   c.expires_at, c.ended_at, c.reason
            FROM work w LEFT JOIN claims c ON c.work = w.work WHERE {where} ORDER BY w.queued_at, c.granted_at""",
        params,
    )


def stats(cursor: duckdb.DuckDBPyConnection, now: float | None = None) -> dict[str, Any]:
    """Counts for a status view: runs per arena, runs in the last hour before `now`, open work per
    kind, agents active, events applied and parked."""
    hour_ago = fold.timestamp((time.time() if now is None else now) - 3600)
    per_arena = _records(
        cursor,
        f"""SELECT arena, count(*) AS total, count(*) FILTER (WHERE status = 'ok') AS ok,
                   count(*) FILTER (WHERE status IN ({', '.join('?' * len(FAILED))})) AS failed,
                   count(*) FILTER (WHERE status = 'running') AS running
            FROM runs GROUP BY arena ORDER BY arena""",
        list(FAILED),
    )
    work = _records(
        cursor,
        """SELECT work_kind, count(*) FILTER (WHERE status = 'queued') AS queued,
                  count(*) FILTER (WHERE status = 'claimed') AS claimed
           FROM work WHERE status <> 'done' GROUP BY work_kind ORDER BY work_kind""",
    )
    counts = _record(
        cursor,
        """SELECT (SELECT count(*) FROM runs WHERE updated_at >= ?) AS runs_last_hour,
                  (SELECT count(*) FROM agents WHERE status = 'active') AS agents_active,
                  (SELECT last_seq FROM meta) AS last_seq, (SELECT count(*) FROM parked) AS parked""",
        [hour_ago],
    )
    return {"runs": per_arena, "work": work, **(counts or {})}


# --- export -------------------------------------------------------------------------------------


def export_parquet(cursor: duckdb.DuckDBPyConnection, directory: Path) -> list[Path]:
    """Every table as `<directory>/<table>.parquet`, one consistent snapshot (one transaction).

    Each file is written beside its final name and renamed into place, so a reader of the
    directory never sees a half-written file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = [(directory / f".{table}.parquet.partial", directory / f"{table}.parquet") for table in schema.TABLES]
    cursor.begin()
    try:
        for table, (partial, _) in zip(schema.TABLES, written):
            cursor.execute(f"COPY {table} TO '{_sql_string(partial)}' (FORMAT parquet)")
    except BaseException:
        for partial, _ in written:
            partial.unlink(missing_ok=True)
        raise
    finally:
        cursor.rollback()
    for partial, path in written:
        partial.replace(path)
    return [path for _, path in written]


def open_export(directory: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory database whose views are the tables of an export: the named queries work on it."""
    missing = [table for table in schema.TABLES if not (directory / f"{table}.parquet").is_file()]
    if missing:
        raise BoardError(f"{directory} is not a board export: no {', '.join(missing)}")
    conn = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for table in schema.TABLES:
        conn.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{_sql_string(directory / f'{table}.parquet')}')")
    for name, query in schema.VIEWS.items():
        conn.execute(f"CREATE VIEW {name} AS {query}")
    return conn


def _sql_string(path: Path) -> str:
    """A path inside a SQL string literal (COPY takes no parameter for its file)."""
    return str(path.resolve()).replace("'", "''")
