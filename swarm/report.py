"""`swarm report FILE.html`: one self-contained page about a swarm's history, and FILE.png of its plot.

The page needs nothing but itself: the figures are inline SVG (`swarm.plots`), the style is inline,
there is no script and no link to fetch. It shows val_bpb over experiments (every run a dot), runs
per node and per hour, the lineage of each arena's best, the promotions with their diffs and
reasons, each audited best's search score against its audit score (the held-out split no search
uses), the candidates that were not promoted with why, the cost per promoted improvement of each brain
kind, and the lab notebook's notes. Its data comes through a
`swarm.reader.Reader`, so it is the same from a running swarm and from its directory.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm import cascade, output, plots
from swarm.export import HISTORY, HISTORY_ORDER
from swarm.history import bpb, gather_bests, gather_costs, when
from swarm.reader import Reader

PROMOTIONS = """SELECT b.seq, b.arena, b.patch, h.title, b.mean, b.std, b.n, b.previous, b.previous_mean, b.threshold,
       b.reason, b.promoted_at, p.parent, p.diff
FROM bests b LEFT JOIN patches p USING (patch) LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis"""
NOT_PROMOTED = """SELECT r.seq, r.arena, r.patch, h.title, r.n, r.mean, r.std, r.outcome, r.explanation, r.decided_at
FROM replications r LEFT JOIN patches p USING (patch) LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis
WHERE r.outcome <> 'promoted'"""
CHILDREN = "SELECT parent, count(*) AS tried FROM patches WHERE parent IS NOT NULL GROUP BY parent"
ARENAS = "SELECT arena, tier, hardware, synthetic FROM arenas"
NOTES = "SELECT seq, arena, trials, note, written_by, written_at FROM notes"
AUDITED = """SELECT b.seq, b.arena, b.patch, h.title, b.mean AS search_bpb, a.audit_bpb, r.synthetic
FROM bests b JOIN (SELECT patch, arg_max(val_bpb, seq) AS audit_bpb FROM audits WHERE status = 'ok' GROUP BY patch) a USING (patch)
LEFT JOIN arenas r ON r.arena = b.arena LEFT JOIN patches p USING (patch) LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis"""


@dataclass
class ReportData:
    source: str
    arenas: list[dict[str, Any]]
    runs: list[dict[str, Any]]  # every run, in the order they started
    promotions: list[dict[str, Any]]
    not_promoted: list[dict[str, Any]]
    bests: list[dict[str, Any]]  # each arena's best, with its lineage (baseline first)
    children: dict[str, int]  # patch -> how many patches were built on it
    notes: list[dict[str, Any]] = field(default_factory=list)  # the lab notebook, oldest first
    costs: list[dict[str, Any]] = field(default_factory=list)  # per brain kind: dollars and device hours per promotion
    transfer_rates: list[dict[str, Any]] = field(default_factory=list)  # per rung pair (swarm.cascade.rates)
    transfers: list[dict[str, Any]] = field(default_factory=list)  # each transfer's outcome, in order
    audited: list[dict[str, Any]] = field(default_factory=list)  # each audited promotion: search and audit score

    def synthetic(self, arena: str) -> bool:
        return any(a["arena"] == arena and a["synthetic"] for a in self.arenas)


async def _rows(reader: Reader, select: str, order: str) -> list[dict[str, Any]]:
    table = await reader.table(select, order)
    return output.records(table["columns"], table["rows"])


async def gather(reader: Reader) -> ReportData:
    return ReportData(
        source=reader.source, arenas=await _rows(reader, ARENAS, "arena"), runs=await _rows(reader, HISTORY, HISTORY_ORDER),
        promotions=await _rows(reader, PROMOTIONS, "b.seq"), not_promoted=await _rows(reader, NOT_PROMOTED, "r.seq"),
        bests=await gather_bests(reader),
        children={row["parent"]: row["tried"] for row in await _rows(reader, CHILDREN, "parent")},
        notes=await _rows(reader, NOTES, "seq"), costs=await gather_costs(reader),
        transfer_rates=await cascade.rates(reader.query), transfers=await cascade.outcomes(reader.query),
        audited=await _rows(reader, AUDITED, "b.seq"),
    )  # fmt: skip


def write(data: ReportData, path: Path) -> tuple[Path, Path]:
    """The page at `path` and the main plot beside it as PNG; both written whole, then moved into place."""
    arenas = sorted({run["arena"] for run in data.runs} | {a["arena"] for a in data.arenas})
    figure = plots.progress_figure([
        plots.ArenaRuns(arena, data.synthetic(arena), [r for r in data.runs if r["arena"] == arena],
                        [p for p in data.promotions if p["arena"] == arena]) for arena in arenas])  # fmt: skip
    page = render(data, plots.svg(figure, "progress"), plots.svg(plots.nodes_figure(data.runs), "nodes"),
                  plots.svg(plots.hours_figure(data.runs), "hours"), plots.svg(plots.audit_figure(data.audited), "audit"))  # fmt: skip
    image = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_page, partial_image = path.with_name(f".{path.name}.partial"), image.with_name(f".{image.name}.partial")
    partial_page.write_text(page, encoding="utf-8")
    plots.png(figure, partial_image)
    partial_page.replace(path)
    partial_image.replace(image)
    return path, image


# --- the page ---------------------------------------------------------------------------------------

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .synthetic { color: #b00000; font-weight: bold; }
figure { margin: 0; } figure svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 0.5em 0; } th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; vertical-align: top; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font: 12px/1.35 ui-monospace, monospace; } pre { margin: 0.3em 0; padding: 0.5em; background: #fafafa; overflow-x: auto; }
.add { color: #116611; background: #eaffea; display: block; } .del { color: #991111; background: #ffecec; display: block; }
.hunk { color: #555; display: block; }
ol.lineage { list-style: none; padding-left: 0; } ol.lineage li { border-left: 3px solid #2ca02c; margin: 0 0 0.4em 0.8em; padding: 0.2em 0.8em; }
ol.lineage li.best { border-left-color: #006400; background: #f2fbf2; } .tried { color: #666; font-size: 90%; }
"""


def render(data: ReportData, progress: str, nodes: str, hours: str, audit: str) -> str:
    ok = sum(1 for run in data.runs if run["status"] == "ok")
    synthetic = any(a["synthetic"] for a in data.arenas)
    label = " (synthetic results)" if synthetic else ""
    nodes_seen = sorted({run.get("node") or "?" for run in data.runs})
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>swarm report{_e(label)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>swarm report{_e(label)}</h1>",
        f"<p class=\"meta\">{len(data.runs)} runs ({ok} ok) in {len(data.arenas)} arena(s) on {len(nodes_seen)} node(s); "
        f"read from {_e(data.source)} at {now}.</p>",
    ]  # fmt: skip
    if synthetic:
        parts.append("<p class=\"synthetic\">Synthetic results: the sim tier scores a known noisy function of the knobs "
                     "instead of training a model. Use them to judge the machinery, not the ideas.</p>")  # fmt: skip
    parts += ["<h2>val_bpb over experiments</h2>",
              "<p>Every run is a dot, coloured by its purpose; runs without a val_bpb (failed, lost, still running) sit in "
              "the band at the top. Stars are promotions (mean ± std over their seeds), connected in order; the "
              "green steps are the best as it stood after each experiment.</p>",
              f"<figure>{progress}</figure>",
              "<h2>runs per node and per hour</h2>", f"<figure>{nodes}</figure>", f"<figure>{hours}</figure>",
              "<h2>lineage of each arena's best</h2>", _lineages(data),
              "<h2>promotions</h2>", _promotions(data),
              "<h2>search score against audit score</h2>",
              "<p>Each promoted best is scored once more on the audit split: documents that no run of the search is "
              "scored on and no agent ever sees. A best whose audit score is much worse than its search score was "
              "chosen partly for the validation split's noise; over many promotions, dots drifting above the "
              "diagonal show the search over-fitting the validation split.</p>",
              f"<figure>{audit}</figure>",
              "<h2>candidates not promoted</h2>", _not_promoted(data),
              "<h2>cost per result</h2>", _costs(data),
              "<h2>lab notebook</h2>", _notes(data),
              *_cascade(data), "</body></html>\n"]  # fmt: skip
    return "\n".join(parts)


def _costs(data: ReportData) -> str:
    if not data.costs:
        return "<p>Nothing spent yet.</p>"
    rows = [[_e(c["brain"]), _e(c["promotions"]), f"${c['llm_usd']:.2f}", f"{c['device_hours']:.2f}",
             "-" if c["usd_per_promotion"] is None else f"${c['usd_per_promotion']:.2f}",
             "-" if c["hours_per_promotion"] is None else f"{c['hours_per_promotion']:.2f}"] for c in data.costs]  # fmt: skip
    return ("<p>What each brain kind paid per promoted improvement: the LLM dollars its agents spent, and the device "
            "hours of the runs of the ideas its ideators proposed.</p>" +
            _table(["brain", "promotions", "LLM $", "device h", "$ per promotion", "device h per promotion"], rows,
                   frozenset({"promotions", "LLM $", "device h", "$ per promotion", "device h per promotion"})))  # fmt: skip


def _notes(data: ReportData) -> str:
    if not data.notes:
        return "<p>No notes: the notebook is written by LLM brains every few trials, never by the offline brain.</p>"
    rows = [[_e(when(n["written_at"])), _e(n["arena"]), _e(n["trials"]), f"<pre>{_e(n['note'])}</pre>", _e(n["written_by"])]
            for n in data.notes]  # fmt: skip
    return _table(["written (UTC)", "arena", "after trials", "note", "by"], rows, frozenset({"after trials"}))


def _cascade(data: ReportData) -> list[str]:
    """The transfer rate per rung pair and each transfer's outcome; nothing for a swarm without transfers."""
    if not data.transfers:
        return []
    gain = cascade.gain
    rates = [[_e(cascade.pair(r)), str(r["transferred"]), str(r["held"]), str(r["lost"]), str(r["not_transferable"]),
              str(r["failed"]), gain(r["mean_gain_below"]), gain(r["mean_gain_above"])] for r in data.transfer_rates]  # fmt: skip
    rows = [[_e(t["source"]), _e(t["title"] or ""), _e(cascade.pair(t)), _e(t["outcome"]), gain(t["gain_below"]),
             gain(t["gain_above"]), _e(t["reason"] or "")] for t in data.transfers]  # fmt: skip
    numeric = frozenset({"transferred", "held", "lost", "not transferable", "failed", "gain below", "gain above"})
    return ["<h2>the cascade: what climbed</h2>",
            "<p>Each winner's change re-applied to the next rung's best (or, a restack, to its own rung's best), "
            "replicated there and decided by the same noise rule. The share that holds is the transfer rate: whether "
            "the cheap rung is a good proxy for the dear one.</p>",
            _table(["rungs", "transferred", "held", "lost", "not transferable", "failed", "gain below", "gain above"], rates, numeric),
            _table(["winner", "idea", "rungs", "outcome", "gain below", "gain above", "reason"], rows, numeric)]  # fmt: skip


def _e(value: Any) -> str:
    return html.escape(output.cell(value))


def _table(columns: list[str], rows: list[list[str]], numeric: frozenset[str] = frozenset()) -> str:
    """An HTML table of cells that are already HTML."""
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    opening = {c: '<td class="num">' if c in numeric else "<td>" for c in columns}
    body = "".join("<tr>" + "".join(f"{opening[c]}{cell}</td>" for c, cell in zip(columns, row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _lineages(data: ReportData) -> str:
    if not data.bests:
        return "<p>No arena has a best yet (the baseline has not finished its seeds).</p>"
    parts = []
    for best in data.bests:
        synthetic = " <span class=\"synthetic\">(synthetic)</span>" if best["synthetic"] else ""
        parts.append(f"<h3>{_e(best['arena'])}{synthetic}: {bpb(best.get('mean'))} ± {bpb(best.get('std'))} over "
                     f"{_e(best.get('n'))} seeds</h3><ol class=\"lineage\">")  # fmt: skip
        for step in best["lineage"]:
            mark = " class=\"best\"" if step["patch"] == best["patch"] else ""
            title = step.get("title") or "baseline"
            tried = data.children.get(step["patch"], 0)
            parts.append(f"<li{mark}><b>{_e(title)}</b> <code>{_e(step['patch'])}</code>: mean val_bpb "
                         f"{bpb(step.get('mean_val_bpb'))} over {_e(step.get('ok') or 0)} ok run(s)"
                         f"<div class=\"tried\">{tried} patch(es) were built on it</div></li>")  # fmt: skip
        parts.append("</ol>")
    return "\n".join(parts)


def _diff(text: str | None) -> str:
    if not text:
        return "<i>no diff: the baseline code</i>"
    lines = []
    for line in text.splitlines():
        kind = "hunk" if line.startswith("@@") else "add" if line.startswith("+") and not line.startswith("+++") else \
            "del" if line.startswith("-") and not line.startswith("---") else ""  # fmt: skip
        lines.append(f"<span class=\"{kind}\">{html.escape(line)}</span>" if kind else html.escape(line))
    return f"<details><summary>diff</summary><pre>{chr(10).join(lines)}</pre></details>"


def _promotions(data: ReportData) -> str:
    if not data.promotions:
        return "<p>No promotions yet.</p>"
    rows = [[_e(when(p["promoted_at"])), _e(p["arena"]) + (" (synthetic)" if data.synthetic(p["arena"]) else ""),
             f"<b>{_e(p.get('title') or 'baseline')}</b><br><code>{_e(p['patch'])}</code>",
             f"{bpb(p.get('mean'))} ± {bpb(p.get('std'))} (n={_e(p.get('n'))})", bpb(p.get("previous_mean")),
             _e(p.get("reason")), _diff(p.get("diff"))] for p in data.promotions]  # fmt: skip
    return _table(["promoted (UTC)", "arena", "idea", "val_bpb", "previous", "reason", "change"], rows,
                  frozenset({"val_bpb", "previous"}))


def _not_promoted(data: ReportData) -> str:
    if not data.not_promoted:
        return "<p>None: every candidate that finished its seeds was promoted, or none finished yet.</p>"
    rows = [[_e(when(r["decided_at"])), f"<b>{_e(r.get('title') or '')}</b><br><code>{_e(r['patch'])}</code>",
             f"{bpb(r.get('mean'))} ± {bpb(r.get('std'))} (n={_e(r.get('n'))})", _e(r["outcome"]), _e(r.get("explanation"))]
            for r in data.not_promoted]  # fmt: skip
    return _table(["decided (UTC)", "idea", "val_bpb", "outcome", "why"], rows, frozenset({"val_bpb"}))
