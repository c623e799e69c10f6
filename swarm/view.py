"""What a person watches while the swarm works: the live view, or one log line per change.

Both read a `Watcher` (swarm.up): the service's stats, the recent runs, the agents' status lines.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from swarm import cascade
from swarm.ground.settings import Settings

STALE_SECONDS = 10.0  # an agent silent for longer is shown as gone quiet


def _seconds(value: float) -> str:
    value = int(value)
    return f"{value // 3600}h{value % 3600 // 60:02d}m" if value >= 3600 else f"{value // 60}m{value % 60:02d}s"


def _bpb(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def headline(watcher: Any, elapsed: float) -> str:
    service, runs, usage = watcher.service(), watcher.stats.get("runs", {}), watcher.stats.get("usage", {})
    finished, failed = service.get("runs_finished", 0), runs.get("failed", 0)
    rate = finished / elapsed * 3600 if elapsed > 60 else 0.0
    parts = [f"up {_seconds(elapsed)}", f"runs {finished} done ({finished - failed} ok, {failed} failed)",
             f"{service.get('runs_in_flight', 0)} training", f"{rate:.0f}/h"]  # fmt: skip
    if usage.get("calls"):
        parts.append(f"LLM {usage.get('input_tokens', 0) + usage.get('output_tokens', 0):,} tokens ${usage.get('cost_usd', 0):.2f}")
    if not service.get("run_budget_left", True):
        parts.append("run budget spent: finishing")
    if watcher.problem:
        parts.append(f"WARNING: {watcher.problem}")
    return "  ".join(parts)


def arenas_table(watcher: Any) -> Table:
    table = Table(title="arenas", title_justify="left", expand=True)
    for column in ("arena", "best val_bpb", "seeds", "best", "lineage", "queued", "claimed"):
        table.add_column(column, overflow="fold")
    bests = {row["arena"]: row for row in watcher.stats.get("bests", [])}
    for arena in watcher.stats.get("arenas", []):
        best = bests.get(arena["arena"], {})
        queued = ", ".join(f"{k} {v}" for k, v in sorted(arena.get("queued", {}).items()) if v) or "-"
        lineage = " > ".join(best.get("lineage", [])) or "-"
        mean = _bpb(best.get("mean")) + (f" +- {best['std']:.4f}" if best.get("std") else "")
        table.add_row(arena["arena"], mean, str(best.get("n", "-")), best.get("title") or arena.get("best") or "(baseline running)",
                      lineage, queued, str(sum(watcher.service().get("claimed", {}).values())))  # fmt: skip
    return table


def ladder_table(watcher: Any) -> Table | None:
    """The ladder's rungs (each arena's best, or why the rung waits) and the transfer rates; None off a ladder."""
    rungs, rates = watcher.stats.get("rungs") or [], watcher.stats.get("transfer_rates") or []
    if not rungs and not rates:
        return None
    table = Table(title="ladder", title_justify="left", expand=True)
    for column in ("rung", "arenas and bests"):
        table.add_column(column, overflow="fold")
    for rung in rungs:
        bests = "; ".join(f"{a['arena']}: {_bpb(a.get('mean'))}" for a in rung["arenas"])
        table.add_row(rung["tier"], rung.get("waiting") or bests)
    for line in cascade.rate_lines(rates):
        table.add_row("transfers", line)
    return table


def agents_table(watcher: Any) -> Table:
    table = Table(title="agents", title_justify="left", expand=True)
    for column in ("agent", "role", "device", "doing", "for", "done"):
        table.add_column(column, overflow="fold")
    now = time.time()
    for name, status in sorted(watcher.statuses.items()):
        quiet = now - float(status.get("at", 0)) > STALE_SECONDS
        doing = Text("(quiet: stopped or unreachable)", style="dim") if quiet else Text(str(status.get("doing", "")))
        table.add_row(name, str(status.get("role", "")), str(status.get("device") or "-"), doing,
                      _seconds(now - float(status.get("since", now))), str(status.get("done", 0)))  # fmt: skip
    return table


def runs_table(watcher: Any) -> Table:
    table = Table(title="recent runs", title_justify="left", expand=True)
    for column in ("run", "purpose", "seed", "status", "val_bpb", "idea"):
        table.add_column(column, overflow="fold")
    for record in watcher.recent:
        status = str(record.get("status", ""))
        style = "green" if status == "ok" else "yellow" if status == "running" else "red"
        table.add_row(str(record.get("run", "")), str(record.get("purpose", "")), str(record.get("seed", "")),
                      Text(status + _repeats(record.get("epochs")), style=style), _bpb(record.get("val_bpb")),
                      str(record.get("title") or ""))  # fmt: skip
    return table


def _repeats(epochs: Any) -> str:
    """A run that saw its training data more than once says so: past one epoch, tokens buy less."""
    return f", {epochs:.1f} epochs" if isinstance(epochs, (int, float)) and epochs > 1 else ""


class LiveView:
    def __init__(self, console: Console, settings: Settings) -> None:
        self.console, self.settings = console, settings
        self.live = Live(console=console, refresh_per_second=2, transient=False)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def update(self, watcher: Any, elapsed: float) -> None:
        title = Text(f"swarm in {self.settings.dir}  ", style="bold") + Text(headline(watcher, elapsed))
        tables = [arenas_table(watcher), ladder_table(watcher), agents_table(watcher), runs_table(watcher)]
        self.live.update(Group(title, *(table for table in tables if table is not None)))


class LogView:
    """One line when something changes: for runs whose output goes to a log file."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.last = ""
        self.seen: set[str] = set()

    def __enter__(self) -> LogView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, watcher: Any, elapsed: float) -> None:
        what = headline(watcher, 0.0)  # without the clock and the hourly rate, which change every second
        if what != self.last:
            self.console.print(headline(watcher, elapsed), highlight=False)
            self.last = what
        for record in reversed(watcher.recent):
            key = f"{record.get('run')}:{record.get('status')}"
            if record.get("status") not in (None, "running") and key not in self.seen:
                self.seen.add(key)
                self.console.print(f"  run {record.get('run')} {record.get('purpose')} seed {record.get('seed')}: "
                                   f"{record.get('status')} {_bpb(record.get('val_bpb'))} {record.get('title') or ''}",
                                   highlight=False)  # fmt: skip
