"""The ideator's desk: everything tried in an arena, as lines a researcher can scan, within a budget.

Each trial says what it was (title, rationale, the knobs it moved or a short diff of its code), what
became of it (promoted, not better, rejected in review and why, failed and why, its mean +- spread
over n seeds) and what the harness measured (steps, tokens, tokens/s, parameters, peak memory,
training seconds). A long history does not fit a prompt: the best, the top results, the most recent
trials and one of each kind of failure are listed first, and what does not fit the budget is
summarised in counts, ranges and common reasons, never dropped without a word.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from agents import knobs
from agents.brains.base import IdeaContext, Trial
from harness.tiers import Tier

CHARS_PER_TOKEN = 4  # the usual estimate for English and code; the providers count exactly
DIFF_LINES = 6  # changed lines of a code change shown
LINE_CHARS = 110  # of one diff line, of a rationale
RECENT, TOP = 15, 5  # trials always listed first, after the best: the latest, and the best results


def tokens(text: str) -> int:
    """About how many tokens `text` costs."""
    return -(-len(text) // CHARS_PER_TOKEN)


def tier_block(tier: Tier | None, arena: str) -> str:
    """The tier's fixed facts an idea must fit: budget, limits, hardware, evaluation size."""
    hardware = arena.split("/")[1] if arena.count("/") >= 2 else "unknown"
    if tier is None:
        return f"tier: unknown; hardware class: {hardware}"
    if tier.synthetic:
        budget = f"synthetic: a known noisy function of the knobs, {tier.budget_seconds:g} s per run"
    elif tier.budget_tokens is not None:
        budget = f"{tier.budget_tokens:,} training tokens (a token budget: a bigger batch means fewer steps)"
    else:
        budget = f"{tier.budget_seconds:g} s of training wall clock (a time budget: a slower step means fewer steps)"
    return "\n".join([
        f"tier: {tier.name} ({tier.description})", f"budget: {budget}",
        f"hard limits: training process {tier.train_limit_seconds:g} s, evaluation {tier.eval_limit_seconds:g} s",
        f"hardware class: {hardware}",
        f"evaluation: {tier.eval_tokens:,} validation tokens at sequence length {tier.context_len}, "
        f"batch {tier.eval_batch} (SEQ_LEN below {tier.context_len} wastes the run)",
    ])  # fmt: skip


def trials_section(context: IdeaContext, budget_chars: int) -> str:
    """The trials, most informative first until `budget_chars`, shown oldest first; the rest summarised."""
    trials = context.trials
    if not trials:
        return "nothing yet: this is the arena's first idea"
    best = knobs.read(context.best_code) if context.best_code else {}
    lines = {id(t): trial_line(t, best) for t in trials}
    chosen: set[int] = set()
    used = 0
    for t in _priority(trials):
        cost = len(lines[id(t)]) + 1
        if id(t) in chosen:
            continue
        if used + cost > budget_chars - 700:  # room for the summary of the rest
            break
        chosen.add(id(t))
        used += cost
    rest = [t for t in trials if id(t) not in chosen]
    head = [summary(rest)] if rest else []
    return "\n".join(head + [lines[id(t)] for t in trials if id(t) in chosen])


def trial_line(t: Trial, best: dict[str, Any]) -> str:
    """One trial: what it was, what became of it, what the harness measured."""
    what = f"diff: {short_diff(t.diff)}" if t.code_change else f"knobs vs best: {delta(t.knobs, best)}"
    parts = [f"- {t.patch}{' [best]' if t.best else ''} {t.title!r}: {outcome(t)}", what]
    if t.metrics:
        parts.append(metrics_text(t.metrics))
    if t.rationale:
        parts.append(f"why: {_one_line(t.rationale)}")
    return "; ".join(parts)


def outcome(t: Trial) -> str:
    """What became of a trial, in words: its score with spread and n, and the verdicts on it."""
    if t.val_bpb is None:
        return f"failed ({t.status}): {_one_line(t.reason or 'no reason given')}"
    score = f"val_bpb {t.val_bpb:.4f}" + (f" +- {t.std:.4f}" if t.std is not None else "") + f" over n={t.n}"
    if t.rejected:
        return f"{score}, rejected in review: {_one_line('; '.join(t.rejected))}"
    if t.best:
        return f"{score}, the current best"
    verdicts = {"promoted": "promoted, since superseded", "not_better": "replicated, not better",
                "failed": "replication failed", "awaiting_review": "replicated, awaiting review",
                "rejected_in_review": "rejected in review"}  # fmt: skip
    if t.outcome in verdicts:
        why = f" ({_one_line(t.explanation)})" if t.explanation and t.outcome != "promoted" else ""
        return f"{score}, {verdicts[t.outcome]}{why}"
    return f"{score}, not a candidate" if t.n <= 1 else f"{score}, replicating"


def metrics_text(m: dict[str, float]) -> str:
    names = [("steps", "steps", "{:.0f}"), ("tokens", "tokens", "{:,.0f}"), ("tokens_per_s", "tok/s", "{:,.0f}"),
             ("params", "params", "{:,.0f}"), ("peak_memory_mb", "peak MB", "{:.0f}"),
             ("training_seconds", "train s", "{:.1f}")]  # fmt: skip
    return "measured: " + ", ".join(f"{label} {fmt.format(m[key])}" for key, label, fmt in names if m.get(key) is not None)


def metrics_of(row: dict[str, Any]) -> dict[str, float]:
    """What the harness measured, from a board desk row: the means of the ok runs, or the last run's
    steps and seconds for a failure (how far it got)."""
    m = {k: row[k] for k in ("steps", "tokens", "training_seconds", "params", "peak_memory_mb") if row.get(k) is not None}
    if m.get("tokens") and m.get("training_seconds"):
        m["tokens_per_s"] = m["tokens"] / m["training_seconds"]
    if "steps" not in m and row.get("last_steps") is not None:
        m |= {"steps": row["last_steps"], "training_seconds": row.get("last_seconds")}
    return {k: float(v) for k, v in m.items() if v is not None}


def short_diff(diff: str) -> str:
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    shown = " | ".join(line[:LINE_CHARS] for line in changed[:DIFF_LINES])
    more = f" | (+{len(changed) - DIFF_LINES} more lines)" if len(changed) > DIFF_LINES else ""
    return (shown + more) or "(no diff recorded)"


def summary(rest: list[Trial]) -> str:
    """The trials not listed, in one paragraph: how many, how they scored, how they failed, what they moved."""
    ok = sorted(t.val_bpb for t in rest if t.val_bpb is not None)
    failed = [t for t in rest if t.val_bpb is None]
    parts = [f"({len(rest)} older or less informative trials summarised, not listed:"]
    if ok:
        parts.append(f"{len(ok)} ran ok, val_bpb {ok[0]:.4f} best, {statistics.median(ok):.4f} median, {ok[-1]:.4f} worst;")
    if failed:
        kinds = Counter(t.status for t in failed)
        reasons = Counter(_one_line(t.reason or "")[:60] for t in failed if t.reason).most_common(3)
        parts.append(f"{len(failed)} failed ({', '.join(f'{k} {n}' for k, n in kinds.most_common())})"
                     + (f", most often: {'; '.join(f'{r} (x{n})' for r, n in reasons)};" if reasons else ";"))  # fmt: skip
    rejected = sum(1 for t in rest if t.rejected)
    if rejected:
        parts.append(f"{rejected} rejected in review;")
    codes = sum(1 for t in rest if t.code_change)
    moved = Counter(name for t in rest for name in t.title.replace(",", " ").split() if name.isupper() and len(name) > 2)
    if codes:
        parts.append(f"{codes} code changes;")
    if moved:
        parts.append("knobs tried most: " + ", ".join(f"{k} (x{n})" for k, n in moved.most_common(6)) + ";")
    return " ".join(parts).rstrip(";") + ")"


def _priority(trials: list[Trial]) -> list[Trial]:
    """Most informative first: the best, the top results, the latest, one of each failure, code changes."""
    scored = sorted((t for t in trials if t.val_bpb is not None), key=lambda t: t.val_bpb or 0.0)
    failures: dict[str, Trial] = {}
    for t in reversed(trials):
        if t.val_bpb is None:
            failures.setdefault(f"{t.status}:{(t.reason or '')[:40]}", t)
    codes = [t for t in reversed(trials) if t.code_change][:RECENT]
    return ([t for t in trials if t.best] + scored[:TOP] + trials[-RECENT:][::-1] + list(failures.values()) + codes
            + trials[::-1])  # fmt: skip


def delta(config: dict[str, Any], best: dict[str, Any]) -> str:
    if not config:
        return "unknown (its code does not parse as plain knobs)"
    moved = [f"{k}={knobs.render(v)}" for k, v in config.items() if k in best and v != best[k]]
    return ", ".join(moved) or "same"


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 3] + "..."
