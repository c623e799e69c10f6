"""The cascade as a research lead reads it: per rung pair, how many winners were transferred, held
and lost, and their mean gain below vs above (the transfer rate: is the cheap rung a good proxy?);
per rung, whether it waits for a node; per best, whether it climbed from below.

Read from the projection's `transfers` and `ports` tables (blackboard.fold), through any Reader or
the service's query request, for `swarm best`, `swarm status`, the live view, the summary and the report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console

from swarm import output

Query = Callable[[str], Awaitable[dict[str, Any]]]  # a read-only SELECT -> {"columns", "rows"}

RATES = """
SELECT fa.tier AS lower, ta.tier AS upper, t.restack, count(*) AS transferred,
       count(*) FILTER (WHERE t.outcome = 'held') AS held, count(*) FILTER (WHERE t.outcome = 'lost') AS lost,
       count(*) FILTER (WHERE t.outcome = 'not_transferable') AS not_transferable,
       count(*) FILTER (WHERE t.outcome = 'failed') AS failed,
       avg(t.gain_below) AS mean_gain_below, avg(t.gain_above) AS mean_gain_above
FROM transfers t JOIN arenas fa ON fa.arena = t.from_arena JOIN arenas ta ON ta.arena = t.to_arena
GROUP BY ALL ORDER BY t.restack, lower, upper
"""
OUTCOMES = """
SELECT t.source, h.title, fa.tier AS lower, ta.tier AS upper, t.restack, t.outcome, t.patch, t.gain_below, t.gain_above, t.reason
FROM transfers t JOIN arenas fa ON fa.arena = t.from_arena JOIN arenas ta ON ta.arena = t.to_arena
LEFT JOIN patches p ON p.patch = t.source LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis
ORDER BY t.seq
"""
CLIMBED = """
SELECT pt.patch, fa.tier FROM ports pt JOIN work w ON w.work = pt.work JOIN patches s ON s.patch = pt.source
JOIN arenas fa ON fa.arena = s.arena WHERE pt.patch IS NOT NULL AND s.arena <> pt.arena
"""
UNDECIDED = """
SELECT b.patch, h.title, a.tier, w.work IS NOT NULL AS queued
FROM bests b JOIN arenas a USING (arena) LEFT JOIN patches p ON p.patch = b.patch
LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis
LEFT JOIN work w ON w.ref = b.patch AND w.work_kind = 'transfer'
WHERE b.previous IS NOT NULL AND b.patch NOT IN (SELECT source FROM transfers) ORDER BY b.seq
"""

BASELINES = """
SELECT a.arena, count(r.run) FILTER (WHERE r.status = 'ok') FROM arenas a LEFT JOIN runs r ON r.patch = a.baseline_patch
WHERE a.arena NOT IN (SELECT arena FROM current_bests) GROUP BY a.arena
"""


def _records(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(zip(result["columns"], row)) for row in result["rows"]]


async def rates(query: Query) -> list[dict[str, Any]]:
    """Per rung pair (and per rung, for restacks): transferred, held, lost, ... and mean gains."""
    return _records(await query(RATES))


async def outcomes(query: Query) -> list[dict[str, Any]]:
    """Every transfer's outcome, in order."""
    return _records(await query(OUTCOMES))


async def undecided(query: Query, ladder: list[str]) -> list[str]:
    """Winners below the ladder's top whose transfer has no outcome yet, and why (for the summary)."""
    lines = []
    baselines = dict((await query(BASELINES))["rows"])  # upper rungs' arenas with no best yet: their ok baseline runs
    for patch, title, tier, queued in (await query(UNDECIDED))["rows"]:
        if tier in ladder[:-1]:
            upper = ladder[ladder.index(tier) + 1]
            waits = [f"{arena}'s baseline ({ok} ok run(s) so far)" for arena, ok in baselines.items()
                     if arena.startswith(f"{upper}/")]  # fmt: skip
            why = ("under way when the swarm stopped" if queued else
                   f"waiting for {' and '.join(waits)}" if waits else f"waiting for a {upper} arena with a best")  # fmt: skip
            lines.append(f"  {tier} -> {upper}: {patch} {title!r}: no outcome yet: {why}")
    return lines


async def climbed(query: Query) -> dict[str, str]:
    """Patches that are re-applied winners of a lower rung -> that rung's tier."""
    return dict((await query(CLIMBED))["rows"])


async def rungs(query: Query, ladder: list[str]) -> list[dict[str, Any]]:
    """Each rung of the ladder: its arenas, or why it waits (no node serves it: nothing has opened it; or
    its baseline waits for the first winner from below)."""
    if not ladder:
        return []
    opened = _records(await query(
        "SELECT a.tier, a.arena, b.mean, b.patch, EXISTS (SELECT 1 FROM work w WHERE w.arena = a.arena "
        "AND w.work_kind = 'baseline') AS started FROM arenas a LEFT JOIN current_bests b USING (arena) ORDER BY a.arena"))
    winners = dict((await query("SELECT a.tier, count(*) FROM bests b JOIN arenas a USING (arena) "
                                "WHERE b.previous IS NOT NULL GROUP BY a.tier"))["rows"])  # fmt: skip
    out = []
    for index, tier in enumerate(ladder):
        arenas = [row for row in opened if row["tier"] == tier]
        below = winners.get(ladder[index - 1], 0) if index else 0
        waiting = None
        if not arenas:  # no node has opened it: its transfers are not queued yet, and nothing is lost
            waiting = f"waiting: no node serves {tier}"
            waiting += f"; {below} winner(s) of {ladder[index - 1]} wait to climb" if below else ""
        elif index and not any(arena["started"] for arena in arenas):  # board.lazy_upper
            waiting = f"waiting: its baseline runs when the first winner of {ladder[index - 1]} climbs"
        out.append({"tier": tier, "arenas": arenas, "waiting": waiting})
    return out


async def fill(stats: dict[str, Any], query: Query) -> None:
    """Add the ladder's rungs and the transfer rates to a stats record that names the ladder (the
    service's): what the live view and `swarm status` show. A stopped swarm's rates still show."""
    stats["rungs"] = await rungs(query, stats.get("ladder") or [])
    stats["transfer_rates"] = await rates(query)


def rate_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per rung pair: the transfer rate, as the summary and the status print it."""
    lines = []
    for row in rows:
        lines.append(f"{pair(row)}: {row['transferred']} transferred, {row['held']} held, {row['lost']} lost, "
                     f"{row['not_transferable']} not transferable, {row['failed']} failed; mean gain below "
                     f"{gain(row['mean_gain_below'])}, above {gain(row['mean_gain_above'])}")  # fmt: skip
    return lines


def print_rates(console: Console, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = [[pair(r), r["transferred"], r["held"], r["lost"], r["not_transferable"], r["failed"], gain(r["mean_gain_below"]),
              gain(r["mean_gain_above"])] for r in rows]  # fmt: skip
    columns = ("rungs", "transferred", "held", "lost", "not transferable", "failed", "gain below", "gain above")
    console.print(output.table(columns, table, title="the transfer rate: winners re-applied one rung up (or restacked)"))


def pair(row: dict[str, Any]) -> str:
    """A transfer's rungs as people read them: `tiny -> small`, or `tiny (restack)`."""
    return f"{row['lower']} (restack)" if row["restack"] else f"{row['lower']} -> {row['upper']}"


def gain(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"
