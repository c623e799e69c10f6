"""Events into rows: the projection's state machine, as pure functions over rows in memory.

The projection loads the rows a batch of events touches (`keys_to_load`, `works_of`, `claims_of`),
folds the events into them in stream order (`fold`), and writes back what changed. Nothing here
reads a clock or the file, so the rows depend only on the events and their order: a rebuild, and
any split of the stream into batches, gives the same tables.

The rules mirror the service's decision state (`blackboard.state`), so the projection shows what
the service decided on:
- the first record of a thing wins (a retried HypothesisProposed, WorkQueued, ArenaOpened...);
- a verdict applies only to a thing still waiting for one (a proposed hypothesis, a submitted
  patch), and is ignored for a thing never seen;
- work is queued, claimed by a grant on queued work, and done when closed: by ClaimReleased(done),
  by a fact naming it (RunFinished.work, ReviewDone.work) or by WorkCancelled. Done is final.
  A claim released undone or expired returns its work to 'queued'; closing work ends the claim
  that held it (released, done). Events about a claim that already ended change nothing;
- runs are facts: RunStarted and RunFinished each create or complete the row, in either order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pydantic_core

from blackboard import rules
from blackboard.events import (
    AgentJoined, AgentLeft, ArenaOpened, AuditScored, BestPromoted, ClaimExpired, ClaimGranted, ClaimReleased,
    ClaimRenewed, Event, HypothesisApproved, HypothesisProposed, HypothesisRejected, LeaderElected, NoteWritten,
    PatchAccepted, PatchRefused, PatchSubmitted, ReplicationDone, ReviewDone, RunFinished, RunLost, RunStarted,
    TransferDone, TransferPorted, UsageRecorded, WorkCancelled, WorkQueued,
)  # fmt: skip
from blackboard.schema import APPENDED, KEYED

Row = dict[str, Any]

_EPOCH = datetime(1970, 1, 1)
_FIRST, _LAST = -62135596800.0, 253402300799.0  # 0001-01-01 and 9999-12-31T23:59:59, Python's range


def timestamp(unix: float) -> datetime:
    """A unix time as a naive UTC datetime, to the microsecond; out-of-range times are clamped, NaN is 0."""
    seconds = 0.0 if math.isnan(unix) else min(max(unix, _FIRST), _LAST)
    return _EPOCH + timedelta(microseconds=round(seconds * 1e6))


def to_json(value: Any) -> str:
    """JSON that DuckDB accepts for anything an event can hold: bytes as base64, NaN and inf as null."""
    return pydantic_core.to_json(value, bytes_mode="base64", inf_nan_mode="null").decode()


@dataclass
class Rows:
    """The rows one batch reads and writes: loaded from the file, then changed in memory."""

    keyed: dict[str, dict[str, Row]] = field(default_factory=lambda: {table: {} for table in KEYED})
    stored: dict[str, set[str]] = field(default_factory=lambda: {table: set() for table in KEYED})  # loaded keys
    changed: dict[str, set[str]] = field(default_factory=lambda: {table: set() for table in KEYED})
    appended: dict[str, list[Row]] = field(default_factory=lambda: {table: [] for table in APPENDED})
    submitted: set[str] = field(default_factory=set)  # patches submitted: runs already stored need their fields

    def get(self, table: str, key: str | None) -> Row | None:
        return self.keyed[table].get(key) if key is not None else None

    def put(self, table: str, key: str, row: Row) -> Row:
        self.keyed[table][key] = row
        self.changed[table].add(key)
        return row

    def touch(self, table: str, key: str) -> None:
        self.changed[table].add(key)


def keys_to_load(events: Iterable[Event]) -> dict[str, set[str]]:
    """The keys of the stored rows these events read: first pass, before claims' work is known."""
    keys: dict[str, set[str]] = {table: set() for table in KEYED}
    for event in events:
        for table, key in _references(event):
            if key is not None:
                keys[table].add(key)
    return keys


def works_of(claims: Iterable[Row]) -> set[str]:
    """The work of loaded claims: a claim's end changes its work."""
    return {row["work"] for row in claims if row.get("work") is not None}


def patches_of(runs: Iterable[Row]) -> set[str]:
    """The patches of loaded runs: a run copies its hypothesis and parent from its patch."""
    return {row["patch"] for row in runs if row.get("patch") is not None}


def claims_of(work: Iterable[Row]) -> set[str]:
    """The claims holding loaded work: closing work ends its claim."""
    return {row["claim"] for row in work if row.get("claim") is not None}


def _references(event: Event) -> list[tuple[str, str | None]]:
    match event:
        case AgentJoined() | AgentLeft():
            return [("agents", event.agent)]
        case ArenaOpened():
            return [("arenas", event.arena), ("patches", event.baseline_patch)]
        case HypothesisProposed():
            return [("hypotheses", event.hypothesis), ("arenas", event.arena)]
        case HypothesisApproved() | HypothesisRejected():
            return [("hypotheses", event.hypothesis)]
        case WorkQueued() | WorkCancelled():
            return [("work", event.work)]
        case ClaimGranted():
            released = [("claims", event.releasing.claim)] if event.releasing is not None else []
            return [*released, ("claims", event.claim), ("work", event.work)]
        case ClaimRenewed() | ClaimReleased() | ClaimExpired():
            return [("claims", event.claim)]
        case PatchSubmitted():
            return [("patches", event.patch), ("arenas", event.arena)]
        case PatchAccepted() | PatchRefused():
            return [("patches", event.patch)]
        case RunStarted():
            return [("runs", event.run), ("patches", event.patch), ("work", event.work)]
        case RunFinished():
            return [("runs", event.run), ("patches", event.patch), ("work", event.work), ("arenas", event.arena)]
        case RunLost():
            return [("runs", event.run)]
        case ReviewDone():
            return [("reviews", event.review), ("work", event.work)]
    return []


def fold(rows: Rows, seq: int, event: Event) -> None:
    """Apply one event, the next in stream order, to the rows in memory."""
    handler = HANDLERS.get(event.kind)
    if handler is not None:
        handler(rows, seq, event)


def finish(rows: Rows) -> None:
    """Copy each changed run's hypothesis and parent from its patch, whichever event came first
    (None while its patch is unknown: they follow the run's patch, whatever it was before). The
    projection loads the patch of every run it loads, so this holds however events are batched."""
    for key in rows.changed["runs"]:
        run = rows.keyed["runs"][key]
        patch = rows.get("patches", run["patch"]) or {}
        run["hypothesis"], run["parent"] = patch.get("hypothesis"), patch.get("parent")


# --- agents and arenas --------------------------------------------------------------------------


def _agent_joined(rows: Rows, seq: int, e: AgentJoined) -> None:
    rows.put("agents", e.agent, {
        "agent": e.agent, "role": e.role, "node": e.node, "brain": e.brain, "devices": list(e.devices),
        "pid": e.pid, "status": "active", "joined_at": timestamp(e.at), "left_at": None, "left_reason": None,
    })  # fmt: skip


def _agent_left(rows: Rows, seq: int, e: AgentLeft) -> None:
    row = rows.get("agents", e.agent) or rows.put("agents", e.agent, {"agent": e.agent})
    row.update(status="left", left_at=timestamp(e.at), left_reason=e.reason)
    rows.touch("agents", e.agent)


def _arena_opened(rows: Rows, seq: int, e: ArenaOpened) -> None:
    if rows.get("arenas", e.arena) is not None:
        return
    at = timestamp(e.at)
    rows.put("arenas", e.arena, {
        "arena": e.arena, "baseline_patch": e.baseline_patch, "fingerprint": e.fingerprint, "tier": e.tier,
        "hardware": e.hardware, "synthetic": e.synthetic, "baseline_hash": e.baseline_hash,
        "opened_by": e.by, "opened_at": at,
    })  # fmt: skip
    rows.put("patches", e.baseline_patch, {
        "patch": e.baseline_patch, "arena": e.arena, "author": e.by, "code": e.baseline_code, "diff": "",
        "code_hash": e.baseline_hash, "status": "accepted", "submitted_at": at, "decided_at": at,
    })  # fmt: skip


# --- hypotheses and patches ---------------------------------------------------------------------


def _hypothesis_proposed(rows: Rows, seq: int, e: HypothesisProposed) -> None:
    if rows.get("hypotheses", e.hypothesis) is not None:
        return
    arena = rows.get("arenas", e.arena)
    # The baseline named or implied is one parent: an idea on it is the same idea either way.
    parent = e.parent or (arena["baseline_patch"] if arena is not None else None)
    rows.put("hypotheses", e.hypothesis, {
        "hypothesis": e.hypothesis, "arena": e.arena, "parent": e.parent, "title": e.title,
        "rationale": e.rationale, "intent": to_json(e.intent),
        "idea_key": rules.idea_key(e.arena, parent, e.title, e.intent),
        "proposed_by": e.by, "proposed_at": timestamp(e.at), "status": "proposed",
    })  # fmt: skip


def _hypothesis_decided(rows: Rows, seq: int, e: HypothesisApproved | HypothesisRejected) -> None:
    _verdict(rows, "hypotheses", e.hypothesis, e, "proposed", "rejected" if isinstance(e, HypothesisRejected) else "approved")


def _verdict(rows: Rows, table: str, key: str, e: Event, waiting: str, status: str) -> None:
    """A verdict applies once, to a thing still waiting for one; a refusal says why (and of what a duplicate)."""
    row = rows.get(table, key)
    if row is None or row["status"] != waiting:
        return
    row.update(
        status=status, decided_at=timestamp(e.at), reason=getattr(e, "reason", None),
        duplicate_of=getattr(e, "duplicate_of", None),
    )  # fmt: skip
    rows.touch(table, key)


def _patch_submitted(rows: Rows, seq: int, e: PatchSubmitted) -> None:
    if rows.get("patches", e.patch) is not None:
        return
    arena = rows.get("arenas", e.arena)
    # No parent means the arena's baseline: name it, so every lineage walks back to a baseline.
    parent = e.parent or (arena["baseline_patch"] if arena is not None else None)
    # The hash the service decides on, recomputed from the code: the sender's `code_hash` is only its claim.
    rows.put("patches", e.patch, {
        "patch": e.patch, "arena": e.arena, "hypothesis": e.hypothesis, "work": e.work, "parent": parent,
        "author": e.by, "code": e.code, "diff": e.diff, "code_hash": rules.patch_hash(e.code), "status": "submitted",
        "submitted_at": timestamp(e.at),
    })  # fmt: skip
    rows.submitted.add(e.patch)


def _patch_decided(rows: Rows, seq: int, e: PatchAccepted | PatchRefused) -> None:
    _verdict(rows, "patches", e.patch, e, "submitted", "refused" if isinstance(e, PatchRefused) else "accepted")


# --- work and claims ----------------------------------------------------------------------------


def _work_queued(rows: Rows, seq: int, e: WorkQueued) -> None:
    if rows.get("work", e.work) is not None:
        return
    rows.put("work", e.work, {
        "work": e.work, "work_kind": e.work_kind, "arena": e.arena, "ref": e.ref, "seed": e.seed,
        "tier": e.tier, "priority": e.priority, "status": "queued", "queued_at": timestamp(e.at),
    })  # fmt: skip


def _work_cancelled(rows: Rows, seq: int, e: WorkCancelled) -> None:
    _close(rows, e.work, e)


def _claim_granted(rows: Rows, seq: int, e: ClaimGranted) -> None:
    if (released := e.released()) is not None:  # a hand-over: its release first
        _claim_released(rows, seq, released)
    work, claim = rows.get("work", e.work), rows.get("claims", e.claim)
    if work is None or work["status"] != "queued" or (claim is not None and claim["status"] == "held"):
        return  # the service grants only queued work; anything else is not a grant it made
    work.update(status="claimed", claim=e.claim)
    rows.touch("work", e.work)
    rows.put("claims", e.claim, {
        "claim": e.claim, "work": e.work, "agent": e.agent, "granted_at": timestamp(e.at),
        "expires_at": timestamp(e.expires_at), "status": "held",
    })  # fmt: skip


def _claim_renewed(rows: Rows, seq: int, e: ClaimRenewed) -> None:
    if (claim := _held(rows, e.claim)) is not None:
        claim["expires_at"] = max(claim["expires_at"], timestamp(e.expires_at))
        rows.touch("claims", e.claim)


def _claim_released(rows: Rows, seq: int, e: ClaimReleased) -> None:
    if (claim := _held(rows, e.claim)) is None:
        return
    _end(rows, claim, "released", e, done=e.done, reason=e.reason)
    if e.done:
        _close(rows, claim["work"], e)
    else:
        _requeue(rows, claim["work"])


def _claim_expired(rows: Rows, seq: int, e: ClaimExpired) -> None:
    if (claim := _held(rows, e.claim)) is not None:
        _end(rows, claim, "expired", e, done=False, reason="its lease ran out")
        _requeue(rows, claim["work"])


def _held(rows: Rows, claim: str) -> Row | None:
    row = rows.get("claims", claim)
    return row if row is not None and row["status"] == "held" else None


def _end(rows: Rows, claim: Row, status: str, e: Event, *, done: bool, reason: str) -> None:
    claim.update(status=status, done=done, ended_at=timestamp(e.at), reason=reason)
    rows.touch("claims", claim["claim"])


def _requeue(rows: Rows, work_id: str | None) -> None:
    work = rows.get("work", work_id)
    if work is not None and work["status"] == "claimed":
        work.update(status="queued", claim=None)
        rows.touch("work", work["work"])


def _close(rows: Rows, work_id: str | None, e: Event) -> None:
    work = rows.get("work", work_id)
    if work is None or work["status"] == "done":
        return
    if (claim := _held(rows, work.get("claim"))) is not None:
        _end(rows, claim, "released", e, done=True, reason=f"its work was closed by {e.kind}")
    work.update(status="done", claim=None, closed_at=timestamp(e.at), closed_by=e.kind)
    rows.touch("work", work["work"])


# --- runs and reviews ---------------------------------------------------------------------------


def _run(rows: Rows, e: RunStarted | RunFinished) -> Row:
    """The run's row, created from the identity both of its events carry whole."""
    row = rows.get("runs", e.run)
    if row is None:
        row = rows.put("runs", e.run, {"run": e.run, "status": "running"})
    fields = ("patch", "arena", "work", "seed", "purpose", "tier", "device", "node")
    row.update({name: getattr(e, name) for name in fields}, agent=e.by)
    at = timestamp(e.at)
    row["updated_at"] = max(row["updated_at"], at) if row.get("updated_at") is not None else at
    rows.touch("runs", e.run)
    return row


def _run_started(rows: Rows, seq: int, e: RunStarted) -> None:
    known = rows.get("runs", e.run)
    if known is not None and known.get("started_at") is not None:
        return  # a repeat: the first start stands
    _run(rows, e)["started_at"] = timestamp(e.at)


def _run_finished(rows: Rows, seq: int, e: RunFinished) -> None:
    row = _run(rows, e)
    results = ("status", "reason", "val_bpb", "training_seconds", "total_seconds", "tokens", "steps", "params",
               "peak_memory_mb", "epochs", "tokens_per_second", "mfu", "cpu_seconds", "sandbox", "fingerprint",
               "synthetic", "source_hash", "log_tail")  # fmt: skip
    row.update({name: getattr(e, name) for name in results}, finished_at=timestamp(e.at))
    if (why := rules.foreign_result(e.fingerprint, (rows.get("arenas", e.arena) or {}).get("fingerprint"))) is not None:
        row.update(status="refused", reason=why)  # kept, visibly, and never compared with the arena's results
        return
    _close(rows, e.work, e)


def _run_lost(rows: Rows, seq: int, e: RunLost) -> None:
    """A run that will never report. A late RunFinished still wins: the run did finish after all."""
    row = rows.get("runs", e.run)
    if row is not None and row["status"] == "running":
        row.update(status="lost", reason=e.reason, finished_at=timestamp(e.at))
        rows.touch("runs", e.run)


def _review_done(rows: Rows, seq: int, e: ReviewDone) -> None:
    rows.put("reviews", e.review, {
        "review": e.review, "patch": e.patch, "work": e.work, "reviewer": e.by, "verdict": e.verdict,
        "reasons": list(e.reasons), "reviewed_at": timestamp(e.at),
    })  # fmt: skip
    _close(rows, e.work, e)


# --- records that only accumulate ---------------------------------------------------------------


def _best_promoted(rows: Rows, seq: int, e: BestPromoted) -> None:
    rows.appended["bests"].append({
        "seq": seq, "arena": e.arena, "patch": e.patch, "mean": e.mean, "std": e.std, "n": e.n,
        "previous": e.previous, "previous_mean": e.previous_mean, "threshold": e.threshold, "reason": e.reason,
        "promoted_by": e.by, "promoted_at": timestamp(e.at),
    })  # fmt: skip


def _replication_done(rows: Rows, seq: int, e: ReplicationDone) -> None:
    rows.appended["replications"].append({
        "seq": seq, "patch": e.patch, "arena": e.arena, "n": e.n, "mean": e.mean, "std": e.std,
        "outcome": e.outcome, "explanation": e.explanation, "decided_at": timestamp(e.at),
    })  # fmt: skip


def _audit_scored(rows: Rows, seq: int, e: AuditScored) -> None:
    rows.appended["audits"].append({
        "seq": seq, "patch": e.patch, "arena": e.arena, "split": e.split, "status": e.status, "val_bpb": e.val_bpb,
        "reason": e.reason, "scored_by": e.by, "scored_at": timestamp(e.at),
    })  # fmt: skip


def _transfer_ported(rows: Rows, seq: int, e: TransferPorted) -> None:
    rows.appended["ports"].append({
        "seq": seq, "work": e.work, "source": e.source, "arena": e.arena, "patch": e.patch, "method": e.method,
        "reason": e.reason, "ported_by": e.by, "ported_at": timestamp(e.at),
    })  # fmt: skip


def _transfer_done(rows: Rows, seq: int, e: TransferDone) -> None:
    rows.appended["transfers"].append({
        "seq": seq, "work": e.work, "source": e.source, "from_arena": e.from_arena, "to_arena": e.to_arena,
        "restack": e.restack, "patch": e.patch, "outcome": e.outcome, "reason": e.reason, "gain_below": e.gain_below,
        "gain_above": e.gain_above, "decided_at": timestamp(e.at),
    })  # fmt: skip


def _usage_recorded(rows: Rows, seq: int, e: UsageRecorded) -> None:
    rows.appended["usage"].append({
        "seq": seq, "agent": e.agent, "provider": e.provider, "model": e.model, "input_tokens": e.input_tokens,
        "output_tokens": e.output_tokens, "cost_usd": e.cost_usd, "recorded_at": timestamp(e.at),
    })  # fmt: skip


def _note_written(rows: Rows, seq: int, e: NoteWritten) -> None:
    rows.appended["notes"].append({"seq": seq, "arena": e.arena, "trials": e.trials, "note": e.note,
                                   "written_by": e.by, "written_at": timestamp(e.at)})  # fmt: skip


def _leader_elected(rows: Rows, seq: int, e: LeaderElected) -> None:
    rows.appended["leaders"].append({"seq": seq, "instance": e.instance, "elected_at": timestamp(e.at)})


HANDLERS: dict[str, Callable[[Rows, int, Any], None]] = {
    "agent_joined": _agent_joined,
    "agent_left": _agent_left,
    "arena_opened": _arena_opened,
    "hypothesis_proposed": _hypothesis_proposed,
    "hypothesis_approved": _hypothesis_decided,
    "hypothesis_rejected": _hypothesis_decided,
    "work_queued": _work_queued,
    "work_cancelled": _work_cancelled,
    "claim_granted": _claim_granted,
    "claim_renewed": _claim_renewed,
    "claim_released": _claim_released,
    "claim_expired": _claim_expired,
    "patch_submitted": _patch_submitted,
    "patch_accepted": _patch_decided,
    "patch_refused": _patch_decided,
    "run_started": _run_started,
    "run_finished": _run_finished,
    "run_lost": _run_lost,
    "review_done": _review_done,
    "best_promoted": _best_promoted,
    "replication_done": _replication_done,
    "usage_recorded": _usage_recorded,
    "note_written": _note_written,
    "leader_elected": _leader_elected,
    "transfer_ported": _transfer_ported,
    "transfer_done": _transfer_done,
    "audit_scored": _audit_scored,
}


def fold_all(rows: Rows, events: Sequence[tuple[int, Event]]) -> None:
    for seq, event in events:
        fold(rows, seq, event)
    finish(rows)
