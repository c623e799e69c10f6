"""Novelty before an idea is queued: is it something the arena has tried, or is about to try?

Two tests, against every trial of the arena and every hypothesis queued or in flight:
- a knob idea that would run a knob configuration already run (or queued) is the same experiment,
  whatever its words; one that runs a new configuration is a new experiment, whatever its words
  (the offline brain words every idea from one template: read as text, nearly all of them looked
  alike, and at 16 devices 30 ideas were refused for each one queued);
- any other idea (a code change) whose title, rationale and change read like an earlier one's
  (title, rationale, diff) above a similarity threshold is a reworded duplicate.

The lexical test is rapidfuzz's token-sort ratio: word order and case do not matter, every word
does. rapidfuzz is an exact C++ implementation with no model to download; a MinHash index
(datasketch) would only pay off at corpora of millions, and it is approximate. The board still
refuses an identical normalised code when the patch is submitted (blackboard.rules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz

from agents import knobs
from agents.brains.base import Idea, IdeaContext

THRESHOLD = 80.0  # token-sort ratio (0-100) at or above which two ideas read as the same
_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?(?:e-?\d+)?")


@dataclass(frozen=True)
class Earlier:
    """Something already tried or queued: what a new idea is compared with."""

    ref: str  # a patch or hypothesis id: the pointer a refusal gives
    title: str
    text: str  # title, rationale and change or diff, as words
    config: dict[str, Any] | None  # the knob configuration it runs; None: a code change, or unknown


def earlier(context: IdeaContext, pending: list[dict[str, Any]]) -> list[Earlier]:
    """The arena's trials and its queued or in-flight hypotheses (desk rows), as comparable records."""
    found = [Earlier(t.patch, t.title, _words(t.title, t.rationale, _changed(t.diff)),
                     None if t.code_change or not t.knobs else _norm(t.knobs))
             for t in context.trials if t.title != "baseline"]  # fmt: skip
    for row in pending:
        intent = row.get("intent") or {}
        found.append(Earlier(row["hypothesis"], row.get("title") or "",
                             _words(row.get("title") or "", row.get("rationale") or "", str(intent.get("change", ""))),
                             resulting_config(intent, row.get("parent"), context)))  # fmt: skip
    return found


def duplicate(idea: Idea, context: IdeaContext, before: list[Earlier], threshold: float = THRESHOLD) -> str | None:
    """Why `idea` is a duplicate of something in `before`, with a pointer to it; None when it is new."""
    config = resulting_config(idea.intent, idea.parent, context)
    if config is not None:
        for e in before:
            if e.config is not None and e.config == config:
                return f"the same knob configuration as {e.ref} ({e.title!r})"
        return None  # a configuration never run: a new experiment however it is worded
    text = words_of(idea)
    scored = [(fuzz.token_sort_ratio(text, e.text), e) for e in before if e.text]
    if scored:
        score, e = max(scored, key=lambda pair: pair[0])
        if score >= threshold:
            return f"reads like {e.ref} ({e.title!r}): {score:.0f}% similar in title, rationale and change"
    return None


def words_of(idea: Idea) -> str:
    """An idea's title, rationale and change as the words the lexical test compares."""
    return _words(idea.title, idea.rationale, str(idea.intent.get("change", "")))


def resulting_config(intent: dict[str, Any], parent: str | None, context: IdeaContext) -> dict[str, Any] | None:
    """The knob configuration a knob-only idea would run: its parent's knobs with its values; None for
    an idea that changes code (or names unknown knobs, or a parent whose knobs are unknown)."""
    changes = intent.get("knobs")
    if intent.get("change") or not isinstance(changes, dict) or not changes:
        return None
    base = next((t.knobs for t in context.trials if t.patch == parent and not t.code_change), None)
    if base is None and (parent in (None, "", context.best_patch)) and context.best_code:
        try:
            base = knobs.read(context.best_code)
        except knobs.KnobError:
            return None
    if not base or not set(changes) <= set(base):
        return None
    return _norm({**base, **changes})


def _norm(config: dict[str, Any]) -> dict[str, Any]:
    """Values compared as values: 3 == 3.0, a JSON list == a tuple."""
    return {k: tuple(v) if isinstance(v, list) else float(v) if isinstance(v, int | float) and not isinstance(v, bool)
            else v for k, v in config.items()}  # fmt: skip


def _words(*texts: str) -> str:
    return " ".join(w.lower() for text in texts for w in _WORDS.findall(text))


def _changed(diff: str) -> str:
    return " ".join(line[1:] for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---")))


def similar_rows(title: str, rationale: str, rows: list[dict[str, Any]], floor: float = 60.0, top: int = 3) -> list[str]:
    """The board desk rows that read most like (title, rationale), as lines with their outcomes: for a reviewer."""
    text = _words(title, rationale)
    scored = sorted(((fuzz.token_sort_ratio(text, _words(r.get("title") or "", r.get("rationale") or "")), r)
                     for r in rows if r.get("title")), key=lambda pair: -pair[0])  # fmt: skip
    lines = []
    for score, r in scored[:top]:
        if score < floor:
            break
        result = f"val_bpb {r['val_bpb']:.4f} over n={r['n']}" if r.get("val_bpb") is not None else r.get("last_status")
        verdict = f", {r['outcome']}" if r.get("outcome") else ""
        rejected = f", rejected in review: {'; '.join(r['rejected'])[:200]}" if r.get("rejected") else ""
        lines.append(f"{r['patch']} {r['title']!r} ({score:.0f}% alike): {result}{verdict}{rejected}")
    return lines
