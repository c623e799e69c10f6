"""`swarm status`: nodes, agents, devices, queues, each arena's best, runs per hour; once or live.

Everything about the board comes from read-only queries through a `swarm.reader.Reader`, so a
stopped swarm's directory shows the same as its service did. A running swarm adds what only it
knows: the service's own state (leader, run budget) and what each agent says it is doing right now
(its status lines on `swarm.status.>`, which are not stored). The arena, agent and recent-run
tables are `swarm.view`'s, the ones `swarm up` shows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from blackboard.queries import FAILED
from swarm import cascade, output, view
from swarm.ground.constants import STATUS
from swarm.history import cost_table, gather_bests, gather_costs, when
from swarm.reader import Reader, ServiceReader

LISTEN_SECONDS = 2.5  # agents say what they do every 2 s (agents.runtime.STATUS_SECONDS): hear each once
_FAILED = ", ".join(f"'{status}'" for status in FAILED)
COUNTS = f"""SELECT count(*) AS runs, count(*) FILTER (WHERE status = 'ok') AS ok,
       count(*) FILTER (WHERE status IN ({_FAILED})) AS failed, count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'lost') AS lost,
       (SELECT count(*) FROM usage) AS llm_calls, (SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM usage) AS llm_tokens,
       (SELECT coalesce(sum(cost_usd), 0) FROM usage) AS llm_cost_usd,
       (SELECT max(last_seq) FROM meta) AS events, (SELECT count(*) FROM parked) AS parked
FROM runs"""
NODES = """WITH a AS (SELECT node, count(*) FILTER (WHERE status = 'active') AS active, count(*) AS agents,
                  list_sort(list_distinct(flatten(list(devices)))) AS devices FROM agents GROUP BY node),
     r AS (SELECT node, count(*) AS runs, count(*) FILTER (WHERE status = 'ok') AS ok,
                  count(*) FILTER (WHERE status = 'running') AS running, max(updated_at) AS last_run FROM runs GROUP BY node)
SELECT coalesce(a.node, r.node) AS node, coalesce(a.active, 0) AS active_agents, coalesce(a.agents, 0) AS agents,
       a.devices, coalesce(r.runs, 0) AS runs, coalesce(r.ok, 0) AS ok, coalesce(r.running, 0) AS running, r.last_run
FROM a FULL JOIN r ON a.node IS NOT DISTINCT FROM r.node ORDER BY node"""
AGENTS = """SELECT a.agent, a.role, a.node, a.devices, a.status, a.joined_at, a.left_at, a.left_reason,
       (SELECT count(*) FROM claims c WHERE c.agent = a.agent AND c.done) AS done
FROM agents a ORDER BY a.agent"""
QUEUES = """SELECT arena, work_kind, count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'claimed') AS claimed
FROM work WHERE status <> 'done' GROUP BY ALL ORDER BY ALL"""
HOURS = f"""SELECT strftime(date_trunc('hour', coalesce(finished_at, started_at)), '%Y-%m-%d %H:00') AS hour, count(*) AS runs,
       count(*) FILTER (WHERE status = 'ok') AS ok, count(*) FILTER (WHERE status IN ({_FAILED})) AS failed,
       count(*) FILTER (WHERE status = 'lost') AS lost
FROM runs GROUP BY ALL ORDER BY hour DESC LIMIT 24"""


@dataclass
class Snapshot:
    """What the status shows; it has what `swarm.view`'s tables read of `swarm.up.Watcher`."""

    source: str
    live: bool
    counts: dict[str, Any]
    nodes: list[dict[str, Any]]
    hours: list[dict[str, Any]]
    agents: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)  # bests and arenas, as the service's stats has them
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent -> its status line (or the board's word)
    recent: list[dict[str, Any]] = field(default_factory=list)
    costs: list[dict[str, Any]] = field(default_factory=list)  # per brain kind: dollars and device hours per promotion

    def service(self) -> dict[str, Any]:
        return self.stats.get("service", {})

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "live": self.live, "counts": self.counts, "service": self.service(),
                "bests": self.stats.get("bests", []), "arenas": self.stats.get("arenas", []), "nodes": self.nodes,
                "ladder": self.stats.get("rungs", []), "transfer_rates": self.stats.get("transfer_rates", []),
                "agents": self.agents, "statuses": self.statuses, "runs_per_hour": self.hours, "recent": self.recent,
                "costs": self.costs}  # fmt: skip


async def listen(reader: Reader) -> dict[str, dict[str, Any]]:
    """The agents' status lines, kept up to date while the reader is open (none from a stopped swarm)."""
    lines: dict[str, dict[str, Any]] = {}
    if isinstance(reader, ServiceReader):
        await reader.bus.listen(f"{STATUS}.>", lambda body: lines.__setitem__(str(body.get("agent")), body))
    return lines


async def _records(reader: Reader, sql: str) -> list[dict[str, Any]]:
    result = await reader.query(sql)
    return output.records(result["columns"], result["rows"])


async def snapshot(reader: Reader, lines: dict[str, dict[str, Any]]) -> Snapshot:
    """The board's state now, with the agents' latest status lines."""
    [counts] = await _records(reader, COUNTS)
    snap = Snapshot(reader.source, reader.live, counts, await _records(reader, NODES), await _records(reader, HOURS),
                    await _records(reader, AGENTS), recent=await reader.history(limit=8))  # fmt: skip
    bests = await gather_bests(reader)
    snap.costs = await gather_costs(reader)
    queued: dict[str, dict[str, int]] = {}
    claimed: dict[str, int] = {}
    for row in await _records(reader, QUEUES):
        queued.setdefault(row["arena"], {})[row["work_kind"]] = row["queued"]
        claimed[row["work_kind"]] = claimed.get(row["work_kind"], 0) + row["claimed"]
    arenas = (await reader.query("SELECT arena FROM arenas ORDER BY arena"))["rows"]
    best_of = {best["arena"]: best["patch"] for best in bests}
    snap.stats = {
        "bests": [{**best, "lineage": [step.get("title") or "baseline" for step in best["lineage"]]} for best in bests],
        "arenas": [{"arena": arena, "best": best_of.get(arena), "queued": queued.get(arena, {})} for (arena,) in arenas],
        "service": {"claimed": claimed},
    }  # fmt: skip
    if isinstance(reader, ServiceReader):
        stats = await reader.stats()
        snap.stats.update(service={**stats.get("service", {}), "claimed": claimed}, ladder=stats.get("ladder", []))
    await cascade.fill(snap.stats, reader.query)
    snap.statuses = _statuses(snap.agents, lines, reader.live)
    return snap


def _statuses(agents: list[dict[str, Any]], lines: dict[str, dict[str, Any]], live: bool) -> dict[str, dict[str, Any]]:
    """Each agent's status line; agents without one get what the board says of them. An active agent
    that has gone silent shows as quiet; in a running swarm, agents that left are not shown."""
    now = time.time()
    shown = {}
    for agent in agents:
        name = agent["agent"]
        if name in lines:
            shown[name] = lines[name]
            continue
        if live and agent["status"] != "active":
            continue
        left = agent["status"] != "active"
        doing = f"left at {when(agent['left_at'])}: {agent.get('left_reason') or ''}" if left else ""
        shown[name] = {"agent": name, "role": agent["role"], "device": ",".join(agent.get("devices") or []) or None,
                       "doing": doing, "done": agent["done"], "at": now if left else 0.0,
                       "since": _seconds(agent["left_at"] if left else agent["joined_at"], now)}  # fmt: skip
    for name, line in lines.items():  # agents the projection has not seen join yet
        shown.setdefault(name, line)
    return dict(sorted(shown.items()))


def _seconds(iso: Any, default: float) -> float:
    try:
        return dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


# --- showing ---------------------------------------------------------------------------------------


def headline(snap: Snapshot) -> Text:
    c = snap.counts
    text = Text("running" if snap.live else "stopped", style="bold green" if snap.live else "bold")
    text += Text(f", read from {snap.source}\n")
    text += Text(f"runs {c['runs']}: {c['ok']} ok, {c['failed']} failed, {c['running']} running, {c['lost']} lost; "
                 f"events {c['events']}" + (f", {c['parked']} parked" if c["parked"] else ""))  # fmt: skip
    if c["llm_calls"]:
        text += Text(f"; LLM {c['llm_calls']} calls, {c['llm_tokens']:,} tokens, ${c['llm_cost_usd']:.2f}")
    service = snap.service()
    if snap.live and "instance" in service:
        budget = "left" if service.get("run_budget_left") else "spent"
        text += Text(f"\nservice {service['instance']} ({'leading' if service.get('leader') else 'standby'}): "
                     f"{service.get('runs_in_flight', 0)} runs in flight, run budget {budget}")  # fmt: skip
    return text


def render(snap: Snapshot) -> RenderableType:
    nodes = output.table(("node", "agents", "devices", "runs", "ok", "running", "last run"), [
        [n["node"], f"{n['active_agents']} active of {n['agents']}", ", ".join(n["devices"] or []) or "-", n["runs"],
         n["ok"], n["running"], when(n["last_run"])] for n in snap.nodes], title="nodes")  # fmt: skip
    hours = output.table(("hour (UTC)", "runs", "ok", "failed", "lost"),
                         [[h["hour"], h["runs"], h["ok"], h["failed"], h["lost"]] for h in snap.hours], title="runs per hour")  # fmt: skip
    costs = cost_table(snap.costs) if snap.costs else None
    tables = [view.arenas_table(snap), view.ladder_table(snap), nodes, view.agents_table(snap), hours, view.runs_table(snap),
              costs]  # fmt: skip
    return Group(headline(snap), *(table for table in tables if table is not None))


def show(console: Console, snap: Snapshot, fmt: str) -> None:
    if fmt == "json":
        console.print(output.to_json(snap.as_dict()), markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(render(snap))


async def once(reader: Reader, console: Console, fmt: str) -> None:
    lines = await listen(reader)
    if reader.live:
        await asyncio.sleep(LISTEN_SECONDS)
    show(console, await snapshot(reader, lines), fmt)


async def watch(reader: Reader, console: Console, interval: float) -> None:
    """Refresh until Ctrl-C."""
    lines = await listen(reader)
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while True:
            snap = await snapshot(reader, lines)
            stamp = Text(f"as of {dt.datetime.now():%H:%M:%S}, every {interval:g} s; Ctrl-C to stop", style="dim")
            live.update(Group(stamp, render(snap)))
            await asyncio.sleep(interval)
