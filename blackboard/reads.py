"""The read requests every service instance answers: best, trials and codes from the decision
state in memory; query, history, show, lineage, stats, desk and notes from the DuckDB projection.

A read of the projection flushes what the service has received first, so it sees at least every
event applied before the request came, and runs in a thread on a cursor of its own (DuckDB
connections are not shared between threads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from blackboard import queries, rules
from blackboard.projection import Projection
from blackboard.state import State
from swarm.ground.errors import BoardError
from swarm.ground.settings import BoardSettings


class Reads:
    def __init__(
        self, state: State, projection: Projection, settings: BoardSettings, instance: str,
        flush: Callable[[], Awaitable[None]], leading: Callable[[], bool],
    ) -> None:  # fmt: skip
        self.state, self.projection, self.settings, self.instance = state, projection, settings, instance
        self._flush, self._leading = flush, leading

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        return {"best": self._best, "query": self._query, "history": self._history, "show": self._show,
                "lineage": self._lineage, "stats": self._stats, "trials": self._trials, "codes": self._codes,
                "desk": self._desk, "notes": self._notes}  # fmt: skip

    # --- from the state -------------------------------------------------------------------------

    async def _trials(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return self.state.trials(text(body, "arena"))

    async def _codes(self, body: dict[str, Any]) -> dict[str, str]:
        wanted = texts(body, "patches")[:100]  # a hundred train.py fit well within one reply
        return {p: self.state.patches[p].code for p in wanted if p in self.state.patches}

    async def _best(self, body: dict[str, Any]) -> dict[str, Any] | None:
        arena = self.state.arenas.get(text(body, "arena"))
        if arena is None or arena.best is None:
            return None
        patch = self.state.patches[arena.best]
        values = patch.ok_values()
        return {"arena": arena.id, "patch": patch.id, "code": patch.code, "values": values,
                "mean": rules.mean(values) if values else None, "spread": self.state.spread(arena.id)}  # fmt: skip

    # --- from the projection --------------------------------------------------------------------

    async def _read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        await self._flush()
        return await in_thread(self._with_cursor, fn, *args, **kwargs)

    def _with_cursor(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        cursor = self.projection.cursor()
        try:
            return fn(cursor, *args, **kwargs)
        finally:
            cursor.close()

    async def _query(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._read(queries.run_query, text(body, "sql"), limit=int(body.get("limit", 10_000)))

    async def _history(self, body: dict[str, Any]) -> dict[str, Any]:
        filters = {k: body[k] for k in ("status", "role", "agent", "arena", "since", "until", "limit") if body.get(k) is not None}
        return await self._read(queries.history, **filters)

    async def _show(self, body: dict[str, Any]) -> Any:
        return await self._read(queries.show, text(body, "id"))

    async def _lineage(self, body: dict[str, Any]) -> Any:
        return await self._read(queries.lineage, text(body, "id"))

    async def _desk(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._read(queries.desk, text(body, "arena"))

    async def _notes(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._read(queries.notes, body.get("arena") or None)

    async def _stats(self, body: dict[str, Any]) -> dict[str, Any]:
        stats = await self._read(_overview)
        state = self.state
        stats["service"] = {"instance": self.instance, "leader": self._leading(), "applied_seq": state.applied_seq,
                            "queues": state.queue_depths(), "claims": len(state.claims),
                            "claimed": _count(self.state.work[c.work].kind for c in state.claims.values()),
                            "runs_started": state.runs_started, "runs_finished": state.runs_finished,
                            "runs_in_flight": len(state.running), "runs_reserved": state.runs_reserved(),
                            "run_budget_left": state.device_work_left(self.settings.max_runs)}  # fmt: skip
        stats["arenas"] = [{"arena": a.id, "best": a.best, "queued": state.queue_depths(a.id)} for a in state.arenas.values()]
        stats["ladder"] = list(self.settings.ladder)  # the cascade's rungs, cheapest first (empty: one tier)
        return stats


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn` in a thread; if we are cancelled meanwhile, the thread still finishes first (a thread
    cannot be stopped, and the projection must not be closed under it)."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


def text(body: dict[str, Any], key: str) -> str:
    """A request's non-empty string field, or BoardError saying it is missing."""
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BoardError(f"the request needs a non-empty string {key!r}")
    return value


def texts(body: dict[str, Any], key: str) -> list[str]:
    """A request's non-empty list of strings, or BoardError saying it is missing."""
    value = body.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BoardError(f"the request needs {key!r}: a non-empty list of strings")
    return value


def _overview(cursor: Any) -> dict[str, Any]:
    """The projection's side of `stats`: counts, each arena's best with its lineage, usage, agents."""
    stats = queries.stats(cursor)
    per_arena = stats.pop("runs")
    stats["runs"] = {key: sum(row[key] for row in per_arena) for key in ("total", "ok", "failed", "running")}
    stats["runs_per_arena"] = per_arena
    stats["bests"] = queries.best_per_arena(cursor)
    for best in stats["bests"]:
        chain = (queries.lineage(cursor, best["patch"]) or {}).get("patches", [])
        best["lineage"] = [row.get("title") or "baseline" for row in reversed(chain)]
    usage = cursor.execute("SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
                           "coalesce(sum(cost_usd), 0) FROM usage").fetchone()  # fmt: skip
    stats["usage"] = dict(zip(("calls", "input_tokens", "output_tokens", "cost_usd"), usage))
    agents = cursor.execute("SELECT agent, role, node FROM agents WHERE status = 'active' ORDER BY agent").fetchall()
    stats["agents"] = [dict(zip(("agent", "role", "node"), row)) for row in agents]
    return stats


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts
