"""The report's figures, drawn with matplotlib: val_bpb over experiments, runs per node, runs per hour,
and each audited best's search score against its audit score.

Figures are built without pyplot (no global state, no display) and written as SVG text to inline in
the page, or as PNG. Every run is one marker in a group whose SVG id starts with `runs-`, so the
page can be checked to show every run. Synthetic results (the sim tier) say so in the title and
the legend.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PURPOSE_COLOURS = {"baseline": "#404040", "explore": "#1f77b4", "replicate": "#ff7f0e", "promote": "#9467bd"}
OTHER_COLOUR = "#17becf"
# Runs without a val_bpb, drawn in a band above the values: failures red, lost grey, running yellow.
NO_VALUE = {"running": ("#e6b800", "o"), "lost": ("#999999", "x")}
FAILED_STYLE = ("#d62728", "x")
BEST_COLOUR = "#2ca02c"
STATUS_ORDER = ("ok", "running", "lost", "failed")
STATUS_COLOURS = {"ok": "#2ca02c", "running": "#e6b800", "lost": "#999999", "failed": "#d62728"}


@dataclass
class ArenaRuns:
    arena: str
    synthetic: bool
    runs: list[dict[str, Any]]  # in the order they started
    promotions: list[dict[str, Any]] = field(default_factory=list)  # in the order they were made


def progress_figure(arenas: list[ArenaRuns]) -> Figure:
    """One panel per arena: every run a dot, the promoted bests connected, the running best as steps."""
    fig = Figure(figsize=(11, 4.6 * max(1, len(arenas))), layout="constrained")
    axes = fig.subplots(max(1, len(arenas)), 1, squeeze=False)[:, 0]
    for index, (ax, arena) in enumerate(zip(axes, arenas)):
        _progress(ax, index, arena)
    if not arenas:
        axes[0].text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=axes[0].transAxes)
    return fig


def _progress(ax: Any, index: int, arena: ArenaRuns) -> None:
    xs = {run["run"]: x for x, run in enumerate(arena.runs, start=1)}
    values = [run["val_bpb"] for run in arena.runs if _has_value(run)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    span = (high - low) or max(abs(high) * 0.01, 0.01)
    band = high + 0.12 * span  # where runs without a value are drawn
    groups: dict[str, list[tuple[int, float]]] = {}
    for run in arena.runs:
        key = (run.get("purpose") or "other") if _has_value(run) else _no_value_kind(run["status"])
        groups.setdefault(key, []).append((xs[run["run"]], run["val_bpb"] if _has_value(run) else band))
    synthetic = " (synthetic)" if arena.synthetic else ""
    for key, points in groups.items():
        if key in NO_VALUE or key == "failed":
            colour, marker = NO_VALUE.get(key, FAILED_STYLE)
            label = f"{key}: no val_bpb ({len(points)})"
        else:
            colour, marker = PURPOSE_COLOURS.get(key, OTHER_COLOUR), "o"
            label = f"{key} run ({len(points)})"
        dots = ax.scatter([p[0] for p in points], [p[1] for p in points], s=22, c=colour, marker=marker,
                          alpha=0.85, linewidths=1.2 if marker == "x" else 0.3, edgecolors="white" if marker == "o" else None,
                          label=label, zorder=3)  # fmt: skip
        dots.set_gid(f"runs-{index}-{key}")
    if any(key in NO_VALUE or key == "failed" for key in groups):
        ax.axhline(high + 0.06 * span, color="#cccccc", linewidth=0.8, linestyle=":", zorder=1)
    promoted = [(_runs_before(arena.runs, p["promoted_at"]), p["mean"], p.get("std") or 0.0) for p in arena.promotions
                if p.get("mean") is not None]  # fmt: skip
    if promoted:
        px, py, pstd = zip(*promoted)
        ax.step([*px, len(arena.runs)], [*py, py[-1]], where="post", color=BEST_COLOUR, linewidth=2.2, alpha=0.8,
                label="running best (promoted mean)", zorder=2)  # fmt: skip
        ax.errorbar(px, py, yerr=pstd, fmt="*--", color="#006400", markersize=13, linewidth=1, capsize=3,
                    label="promoted bests (mean ± std)", zorder=4)  # fmt: skip
    title = f"val_bpb over experiments — {arena.arena}"
    ax.set_title(title + ("\nSYNTHETIC results (sim tier): a known noisy function of the knobs, not training" if synthetic else ""),
                 loc="left", fontsize=11, color="#b00000" if synthetic else "black")  # fmt: skip
    ax.set_xlabel("experiment (runs in the order they started)")
    ax.set_ylabel("val_bpb" + synthetic + " (lower is better)")
    ax.set_xlim(0, len(arena.runs) + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, color="#eeeeee", zorder=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False,
              title="SYNTHETIC results (sim tier)" if synthetic else None, title_fontproperties={"weight": "bold"})  # fmt: skip


def audit_figure(audited: list[dict[str, Any]]) -> Figure:
    """Each audited best a dot: its promoted mean val_bpb (what the search chose it on) against its score
    on the audit split (what no search saw), one colour per arena, promotions numbered in order. Dots
    that drift above the diagonal as the search goes on show the validation split being over-fitted."""
    fig = Figure(figsize=(8, 6), layout="constrained")
    ax = fig.subplots()
    if not audited:
        ax.text(0.5, 0.5, "no audited best yet", ha="center", va="center", transform=ax.transAxes)
        return fig
    values = [v for row in audited for v in (row["search_bpb"], row["audit_bpb"])]
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or max(abs(high) * 0.01, 0.01)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], linestyle="--", color="#999999", linewidth=1,
            label="audit = search", zorder=1)  # fmt: skip
    arenas = list(dict.fromkeys(row["arena"] for row in audited))
    colours = matplotlib.color_sequences["tab10"]
    for index, arena in enumerate(arenas):
        rows = [row for row in audited if row["arena"] == arena]
        synthetic = " (synthetic)" if any(row.get("synthetic") for row in rows) else ""
        dots = ax.scatter([r["search_bpb"] for r in rows], [r["audit_bpb"] for r in rows], s=46, color=colours[index % 10],
                          edgecolors="white", linewidths=0.5, label=f"{arena}{synthetic} ({len(rows)})", zorder=3)  # fmt: skip
        dots.set_gid(f"audits-{index}")
        for order, row in enumerate(rows, start=1):
            ax.annotate(str(order), (row["search_bpb"], row["audit_bpb"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=8, color="#444444")  # fmt: skip
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("search score: promoted mean val_bpb (lower is better)")
    ax.set_ylabel("audit score: val_bpb on the audit split")
    ax.set_title("search score against audit score, each audited best (numbered in promotion order)", loc="left", fontsize=11)
    ax.grid(True, color="#eeeeee", zorder=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    return fig


def _has_value(run: dict[str, Any]) -> bool:
    return run.get("status") == "ok" and isinstance(run.get("val_bpb"), (int, float))


def _no_value_kind(status: str) -> str:
    return status if status in NO_VALUE else "failed"


def _runs_before(runs: list[dict[str, Any]], moment: str | None) -> int:
    """Where a promotion goes on the x axis: after the last run that started before it."""
    return sum(1 for run in runs if moment is None or (run.get("started_at") or "") <= moment)


def _status_group(status: str) -> str:
    return status if status in ("ok", "running", "lost") else "failed"


def nodes_figure(runs: list[dict[str, Any]]) -> Figure:
    """Runs per node, split by how they ended."""
    counts = Counter((run.get("node") or "?", _status_group(run["status"])) for run in runs)
    nodes = sorted({node for node, _ in counts})
    fig = Figure(figsize=(8, 0.8 + 0.45 * max(1, len(nodes))), layout="constrained")
    ax = fig.subplots()
    left = [0] * len(nodes)
    for status in STATUS_ORDER:
        widths = [counts.get((node, status), 0) for node in nodes]
        if any(widths):
            ax.barh(nodes, widths, left=left, color=STATUS_COLOURS[status], label=status)
            left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("runs")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("runs per node", loc="left", fontsize=11)
    ax.invert_yaxis()
    _legend_or_nothing(ax, runs)
    return fig


def hours_figure(runs: list[dict[str, Any]]) -> Figure:
    """Runs per hour (UTC) of finishing (or starting, for unfinished ones), split by how they ended."""
    counts = Counter(((run.get("finished_at") or run.get("started_at") or "?")[:13], _status_group(run["status"]))
                     for run in runs)  # fmt: skip
    hours = sorted({hour for hour, _ in counts})
    fig = Figure(figsize=(max(6, 0.5 * len(hours) + 3), 3.4), layout="constrained")
    ax = fig.subplots()
    labels = [hour.replace("T", " ") + ":00" for hour in hours]
    bottom = [0] * len(hours)
    for status in STATUS_ORDER:
        heights = [counts.get((hour, status), 0) for hour in hours]
        if any(heights):
            ax.bar(labels, heights, bottom=bottom, width=0.6, color=STATUS_COLOURS[status], label=status)
            bottom = [a + b for a, b in zip(bottom, heights)]
    ax.set_ylabel("runs")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("runs per hour (UTC)", loc="left", fontsize=11)
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    _legend_or_nothing(ax, runs)
    return fig


def _legend_or_nothing(ax: Any, runs: list[dict[str, Any]]) -> None:
    if runs:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    else:
        ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes)


def svg(fig: Figure, salt: str) -> str:
    """The figure as an <svg> element to inline in HTML. `salt` makes its internal ids (markers, clip
    paths) differ from those of the page's other figures, and keeps them the same from run to run."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # no XML declaration or DOCTYPE inside HTML


def png(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
