"""What a person reads about a swarm's past: its runs, one thing in detail, each arena's best.

Each view gathers its answer from a `swarm.reader.Reader` (so it is the same from a running swarm
and from its directory) and prints it as a table, CSV or JSON (`swarm.output`).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from harness.runner import FAILED
from swarm import cascade, output
from swarm.ground.errors import BoardError, ConfigError
from swarm.reader import Reader

_AGO = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])(?:\s+ago)?\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HISTORY_COLUMNS = ("run", "updated", "status", "val_bpb", "purpose", "seed", "idea", "tok/s", "MFU", "epochs", "agent",
                   "role", "node")  # fmt: skip
LONG_FIELDS = ("code", "diff", "log_tail")  # shown on their own, not in a record's table
GOOD = {"ok", "accepted", "approved", "approve", "promoted", "active"}
PENDING = {"running", "submitted", "proposed", "held", "queued", "claimed"}
BAD = {*FAILED, "refused", "reject", "lost", "expired"}


def parse_when(text: str | None, option: str, now: float | None = None) -> float | None:
    """An ISO 8601 time ('2025-01-31T12:00', UTC unless it says otherwise) or an age ('2h', '30m ago')
    as unix seconds."""
    if text is None:
        return None
    if match := _AGO.fullmatch(text):
        return (time.time() if now is None else now) - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r}: give an ISO time (2025-01-31T12:00) or an age (2h, 30m, 90s)") from exc
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()


def when(value: Any) -> str:
    """A board timestamp ('2025-01-31T12:00:00.000Z') as a person reads it, in UTC."""
    return value.replace("T", " ").removesuffix("Z")[:19] if isinstance(value, str) else output.cell(value)


def bpb(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def status_text(status: Any) -> Text:
    style = "green" if status in GOOD else "yellow" if status in PENDING else "red" if status in BAD else ""
    return Text(str(status or ""), style=style)


# --- history ---------------------------------------------------------------------------------------


def print_history(console: Console, runs: list[dict[str, Any]], fmt: str) -> None:
    """Runs newest first; the table shows the columns a person scans, CSV and JSON every field."""
    if fmt != "table":
        columns = list(runs[0]) if runs else ["run", "updated_at", "status", "val_bpb", "purpose", "seed", "title"]
        output.emit(console, columns, [[run.get(c) for c in columns] for run in runs], fmt)
        return
    rows = [[run["run"], when(run.get("updated_at")), status_text(run.get("status")), bpb(run.get("val_bpb")),
             run.get("purpose"), run.get("seed"), run.get("title") or ("baseline" if run.get("purpose") == "baseline" else ""),
             _rate(run.get("tokens_per_second")), _share(run.get("mfu")), _epochs(run.get("epochs")),
             run.get("agent"), run.get("role"), run.get("node")] for run in runs]  # fmt: skip
    console.print(output.table(HISTORY_COLUMNS, rows, title=f"{len(runs)} runs, newest first"))


def _rate(value: Any) -> str:
    return "" if value is None else f"{value:,.0f}"


def _share(value: Any) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _epochs(value: Any) -> str:
    """Epochs, flagged where the run saw its data more than once."""
    return "" if value is None else f"{value:.2f}" + (" (repeated)" if value > 1 else "")


# --- show ------------------------------------------------------------------------------------------


async def gather_show(reader: Reader, id: str) -> dict[str, Any]:
    """A hypothesis, patch or run with what hangs off it, and its lineage back to the baseline."""
    found = await reader.show(id)
    if found is None:
        raise BoardError(f"no hypothesis, patch or run has the id {id!r}")
    start = await _lineage_start(reader, found)
    found["lineage"] = await reader.lineage(start) if start else None
    found["note"] = await _latest_note(reader, found)
    return found


async def _latest_note(reader: Reader, found: dict[str, Any]) -> dict[str, Any] | None:
    """The lab notebook's latest note on the thing's arena: what the swarm had learned there."""
    arena = found["record"].get("arena") or (found.get("patch") or {}).get("arena")
    if not arena:
        return None
    quoted = str(arena).replace("'", "''")
    rows = (await reader.query(f"SELECT trials, note, written_by, written_at FROM notes WHERE arena = '{quoted}' "
                               "ORDER BY seq DESC LIMIT 1"))  # fmt: skip
    return output.records(rows["columns"], rows["rows"])[0] if rows["rows"] else None


async def _lineage_start(reader: Reader, found: dict[str, Any]) -> str:
    """Runs and patches have a lineage of their own; a hypothesis has its patch's, or its parent's."""
    record = found["record"]
    if found["kind"] != "hypothesis":
        return record.get("run") or record["patch"]
    patches = sorted(found.get("patches", []), key=lambda p: p.get("status") != "accepted")
    if patches:
        return patches[0]["patch"]
    if record.get("parent"):
        return record["parent"]
    arena = str(record.get("arena") or "").replace("'", "''")
    rows = (await reader.query(f"SELECT baseline_patch FROM arenas WHERE arena = '{arena}'"))["rows"]
    return rows[0][0] if rows and rows[0][0] else ""


def print_show(console: Console, found: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        console.print(output.to_json(found), markup=False, highlight=False, soft_wrap=True)
        return
    kind, record = found["kind"], found["record"]
    id = record.get(kind)
    head = Text(f"{kind} {id}", style="bold") + Text(f"  {record.get('status', '')}")
    if kind == "run":
        head += Text(f"  val_bpb {bpb(record.get('val_bpb'))}")
    console.print(head)
    fields = [[key, when(value) if key.endswith("_at") else value] for key, value in record.items()
              if key not in LONG_FIELDS and key != kind]  # fmt: skip
    console.print(output.table(("field", "value"), fields))
    patch = record if kind == "patch" else found.get("patch") or {}
    if patch.get("diff"):
        console.print(Panel(Syntax(patch["diff"], "diff", theme="ansi_dark", word_wrap=True), expand=False,
                            title=f"diff of {patch.get('patch')} against {patch.get('parent') or 'nothing'}",
                            title_align="left"))  # fmt: skip
    elif patch.get("patch"):
        console.print(Text(f"patch {patch['patch']}: no diff (the baseline code)", style="dim"))
    if record.get("log_tail"):
        console.print(Panel(Text(record["log_tail"]), title="end of the run's log", title_align="left", expand=False))
    for key in ("runs", "patches", "reviews", "claims", "promotions", "replications", "audits"):
        if key in found:
            _print_records(console, key, found[key])
    _print_lineage(console, found.get("lineage"))
    if note := found.get("note"):
        console.print(Panel(Text(note["note"]), title_align="left", expand=False,
                            title=f"lab notebook: the latest note on {record.get('arena')}, after {note['trials']} trials"))  # fmt: skip


def _print_records(console: Console, title: str, items: list[dict[str, Any]]) -> None:
    if not items:
        console.print(Text(f"{title}: none", style="dim"))
        return
    columns = [c for c in items[0] if c not in LONG_FIELDS]
    rows = [[status_text(item[c]) if c == "status" else when(item[c]) if c.endswith("_at") else item[c]
             for c in columns] for item in items]  # fmt: skip
    console.print(output.table(columns, rows, title=title))


def _print_lineage(console: Console, lineage: dict[str, Any] | None) -> None:
    if not lineage:
        console.print(Text("lineage: none (no patch yet)", style="dim"))
        return
    promoted = {p["patch"] for p in lineage.get("promotions", [])}
    rows = []
    for step in reversed(lineage["patches"]):  # from the baseline down to this one
        title = step.get("title") or ("baseline" if not step.get("parent") else "")
        rows.append([step["patch"], title, step.get("status"), step.get("runs") or 0, step.get("ok") or 0,
                     bpb(step.get("mean_val_bpb")), "promoted" if step["patch"] in promoted else ""])  # fmt: skip
    console.print(output.table(("patch", "idea", "status", "runs", "ok", "mean val_bpb", "best"), rows,
                               title="lineage, from the baseline"))  # fmt: skip


# --- best ------------------------------------------------------------------------------------------

# What each brain kind paid per promoted improvement: the LLM dollars its agents spent, the device
# hours of the runs of the ideas its ideators proposed, and the promotions (beyond a baseline) of those.
COSTS = """WITH kinds AS (SELECT agent, coalesce(brain, 'unknown') AS brain FROM agents),
ideas AS (SELECT h.hypothesis, coalesce(k.brain, 'unknown') AS brain FROM hypotheses h LEFT JOIN kinds k ON k.agent = h.proposed_by),
promoted AS (SELECT i.brain, count(*) AS promotions FROM bests b JOIN patches p USING (patch)
             JOIN ideas i ON i.hypothesis = p.hypothesis WHERE b.previous IS NOT NULL GROUP BY i.brain),
spent AS (SELECT coalesce(k.brain, 'unknown') AS brain, sum(u.cost_usd) AS llm_usd FROM usage u LEFT JOIN kinds k USING (agent) GROUP BY 1),
device AS (SELECT i.brain, sum(r.total_seconds) / 3600 AS device_hours FROM runs r JOIN ideas i USING (hypothesis) GROUP BY 1),
brains AS (SELECT brain FROM promoted UNION SELECT brain FROM spent UNION SELECT brain FROM device)
SELECT brain, coalesce(promotions, 0) AS promotions, coalesce(llm_usd, 0) AS llm_usd, coalesce(device_hours, 0) AS device_hours,
       CASE WHEN promotions > 0 THEN coalesce(llm_usd, 0) / promotions END AS usd_per_promotion,
       CASE WHEN promotions > 0 THEN coalesce(device_hours, 0) / promotions END AS hours_per_promotion
FROM brains LEFT JOIN promoted USING (brain) LEFT JOIN spent USING (brain) LEFT JOIN device USING (brain)"""
COST_COLUMNS = ("brain", "promotions", "llm_usd", "device_hours", "usd_per_promotion", "hours_per_promotion")


async def gather_costs(reader: Reader) -> list[dict[str, Any]]:
    """Per brain kind: promotions, LLM dollars, device hours, and both per promotion (None without one)."""
    table = await reader.table(COSTS, "brain")
    return output.records(table["columns"], table["rows"])


def print_costs(console: Console, costs: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "json":
        console.print(output.to_json(costs), markup=False, highlight=False, soft_wrap=True)
        return
    if fmt == "csv":
        output.emit(console, COST_COLUMNS, [[c[k] for k in COST_COLUMNS] for c in costs], fmt)
        return
    console.print(cost_table(costs))


def cost_table(costs: list[dict[str, Any]]) -> Table:
    """What each brain kind paid per promoted improvement: LLM dollars and device hours."""
    rows = [[c["brain"], c["promotions"], f"${c['llm_usd']:.2f}", f"{c['device_hours']:.2f}",
             "-" if c["usd_per_promotion"] is None else f"${c['usd_per_promotion']:.2f}",
             "-" if c["hours_per_promotion"] is None else f"{c['hours_per_promotion']:.2f}"] for c in costs]  # fmt: skip
    return output.table(("brain", "promotions", "LLM $", "device h", "$ per promotion", "device h per promotion"),
                        rows or [["-", 0, "$0.00", "0.00", "-", "-"]], title="cost per result, by brain kind")  # fmt: skip


AUDITS = "SELECT patch, arg_max(val_bpb, seq) FROM audits WHERE status = 'ok' GROUP BY patch"


async def gather_bests(reader: Reader, arena: str | None = None) -> list[dict[str, Any]]:
    """Each arena's best with its lineage (baseline first) and whether its results are synthetic."""
    bests = [best for best in await reader.bests() if arena is None or best["arena"] == arena]
    synthetic = dict((await reader.query("SELECT arena, synthetic FROM arenas ORDER BY arena"))["rows"])
    from_below = await cascade.climbed(reader.query)
    audits = dict((await reader.query(AUDITS))["rows"])
    for best in bests:
        best["audit_bpb"] = audits.get(best["patch"])  # its score on the held-out audit split, for people only
        chain = (await reader.lineage(best["patch"]) or {}).get("patches", [])
        best["synthetic"] = bool(synthetic.get(best["arena"]))
        best["lineage"] = list(reversed(chain))
        best["from_below"] = from_below.get(best["patch"])  # the rung this best climbed from, if it did
    return bests


async def gather_best(reader: Reader, arena: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What `swarm best` shows: each arena's best, and the transfer rate per rung pair."""
    return await gather_bests(reader, arena), await cascade.rates(reader.query)


def print_bests(console: Console, bests: list[dict[str, Any]], fmt: str, rates: list[dict[str, Any]] | None = None) -> None:
    if fmt == "json":  # the transfer rates ride on the bests they lead to: the upper rung's
        for best in bests:
            best["transfers_in"] = [rate for rate in rates or [] if rate["upper"] == best["arena"].split("/")[0]]
        console.print(output.to_json(bests), markup=False, highlight=False, soft_wrap=True)
        return
    if fmt == "csv":
        columns = ("arena", "synthetic", "mean", "std", "n", "patch", "idea", "promoted_at", "lineage")
        output.emit(console, columns, [[best["arena"], best["synthetic"], best.get("mean"), best.get("std"), best.get("n"),
                                        best["patch"], best.get("title"), best.get("promoted_at"), _chain(best)]
                                       for best in bests], "csv")  # fmt: skip
        return
    rows = [[best["arena"] + (" (synthetic)" if best["synthetic"] else ""), f"{bpb(best.get('mean'))} ± {bpb(best.get('std'))}"
             + (f" (audit {bpb(best['audit_bpb'])})" if best.get("audit_bpb") is not None else ""),
             best.get("n"), best["patch"], (best.get("title") or "baseline") + _climbed(best), when(best.get("promoted_at")),
             _chain(best)] for best in bests]  # fmt: skip
    title = "each arena's best: mean ± std of val_bpb over n seeds" if bests else "no arena has a best yet"
    console.print(output.table(("arena", "val_bpb", "n", "patch", "idea", "promoted", "lineage"), rows, title=title))
    cascade.print_rates(console, rates or [])


def _climbed(best: dict[str, Any]) -> str:
    return f" (from {best['from_below']})" if best.get("from_below") else ""


def _chain(best: dict[str, Any]) -> str:
    return " > ".join(step.get("title") or "baseline" for step in best["lineage"])
