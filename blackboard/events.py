"""The events of the swarm: versioned, past-tense records. The stream of them is the truth.

Two kinds of event, by who may publish them:
- facts, published by the agent that owns them (its proposal, its patch, its run's result), so a
  result survives the blackboard service being down;
- decisions (`DECISION = True`), published only by the leading blackboard service: grants,
  verdicts, queued work, promotions.

The life of a piece of research, as events:

    ArenaOpened          a node brings (fingerprint, tier, hardware) and the baseline code
    WorkQueued(baseline) x K seeds; RunFinished(purpose=baseline) each; BestPromoted (the baseline)
    HypothesisProposed   an ideator's idea, building on a parent patch
    HypothesisApproved | HypothesisRejected(duplicate_of=...)
    WorkQueued(implement) -> ClaimGranted -> ClaimRenewed ... (heartbeats)
    PatchSubmitted       the implementer's new train.py
    PatchAccepted | PatchRefused(duplicate_of=...)   same normalised code already run in the arena
    RunStarted, RunFinished(purpose=explore)
    WorkQueued(replicate) x K-1 seeds and WorkQueued(review), when the result is a candidate
    RunFinished(purpose=replicate) ..., ReviewDone
    BestPromoted | ReplicationDone(outcome=...)      the promotion rule's verdict, with its reason

A work item is closed by a `ClaimReleased(done=True)` on it, by a fact naming it (`RunFinished`,
`ReviewDone`) or by `WorkCancelled`; a claim released undone or expired returns its work to the pool,
and a run its holder had started on that work and not finished is then declared `RunLost`. A holder
that gives a claim back and takes its next work in one request (a hand-over) gets one `ClaimGranted`
whose `releasing` stands for the `ClaimReleased`, applied first.

Every event has a unique `id`, used as the JetStream message id so a retried publish is stored
once. Decoding ignores unknown fields (an old node reads a newer event of the same major schema
version) and refuses anything else with `DecodeError`, never a crash.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any, ClassVar, Literal, Union

import msgpack
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from harness.runner import Status
from swarm.ground.bus import Envelope, Message  # Message: re-exported, what the projection decodes
from swarm.ground.constants import DECISIONS, FACTS, MAX_EVENT_BYTES, READABLE_VERSIONS, SCHEMA_VERSION
from swarm.ground.errors import DecodeError

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str) -> str:
    """A unique, time-sortable id: `prefix-` and a 26-character ULID (48-bit ms time, 80 random bits)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = [_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5)]
    return f"{prefix}-{''.join(chars)}"


Purpose = Literal["explore", "replicate", "baseline", "promote"]
WorkKind = Literal["implement", "baseline", "replicate", "review", "promote", "transfer", "audit"]
RunStatus = Status  # the runner owns the outcomes of a run
Review = Literal["approve", "reject"]  # a reviewer's verdict
Outcome = Literal["promoted", "not_better", "rejected_in_review", "awaiting_review", "failed"]  # of a candidate
TransferOutcome = Literal["held", "lost", "not_transferable", "failed"]  # of a winner re-applied elsewhere
PortMethod = Literal["knobs", "merge", "brain"]  # how a transferred change was re-applied


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    DECISION: ClassVar[bool] = False

    kind: str
    v: int = SCHEMA_VERSION
    id: str = Field(default_factory=lambda: new_id("e"))
    at: float = Field(default_factory=time.time, allow_inf_nan=False)  # unix seconds when it happened
    by: str  # the agent, or the service instance, that published it

    @property
    def subject(self) -> str:
        return f"{DECISIONS if self.DECISION else FACTS}.{self.kind}"


class Decision(Event):
    DECISION: ClassVar[bool] = True


# --- agents and arenas -------------------------------------------------------------------------


class AgentJoined(Event):
    kind: Literal["agent_joined"] = "agent_joined"
    agent: str
    role: str
    node: str
    brain: str | None = None
    devices: list[str] = []
    pid: int | None = None


class AgentLeft(Event):
    kind: Literal["agent_left"] = "agent_left"
    agent: str
    reason: str = ""


class ArenaOpened(Event):
    """A node brings an arena: results are only ever compared within one."""

    kind: Literal["arena_opened"] = "arena_opened"
    arena: str  # "<tier>/<hardware>/<fingerprint[:12]>"
    baseline_patch: str  # the id under which the baseline code is a patch (the root of every lineage)
    fingerprint: str
    tier: str
    hardware: str
    synthetic: bool = False  # the sim tier: numbers from a known function, not training
    baseline_code: str
    baseline_hash: str  # normalised code hash of the baseline


# --- hypotheses ---------------------------------------------------------------------------------


class HypothesisProposed(Event):
    kind: Literal["hypothesis_proposed"] = "hypothesis_proposed"
    hypothesis: str
    arena: str
    parent: str | None = None  # the patch this idea builds on; None: the arena's baseline
    title: str
    rationale: str = ""
    intent: dict[str, Any] = {}  # e.g. {"knobs": {"LR": 0.02}} from the offline brain


class HypothesisApproved(Decision):
    kind: Literal["hypothesis_approved"] = "hypothesis_approved"
    hypothesis: str


class HypothesisRejected(Decision):
    kind: Literal["hypothesis_rejected"] = "hypothesis_rejected"
    hypothesis: str
    reason: str
    duplicate_of: str | None = None  # the earlier hypothesis with the same normalised text


# --- work and claims ----------------------------------------------------------------------------


class WorkQueued(Decision):
    kind: Literal["work_queued"] = "work_queued"
    work: str
    work_kind: WorkKind
    arena: str
    ref: str  # hypothesis id for implement; patch id for baseline, replicate, review, promote, transfer (the winner), audit
    seed: int | None = None
    tier: str | None = None  # transfer: the tier of the arena the winner is re-applied in
    priority: int = 0  # higher first


class WorkCancelled(Decision):
    """Work that no longer needs doing (say, replication of a candidate that review rejected)."""

    kind: Literal["work_cancelled"] = "work_cancelled"
    work: str
    reason: str


class Released(BaseModel):
    """A claim given back as part of a grant to its holder (a hand-over): what a ClaimReleased says."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    claim: str
    done: bool
    reason: str = ""


class ClaimGranted(Decision):
    kind: Literal["claim_granted"] = "claim_granted"
    claim: str
    work: str
    agent: str
    expires_at: float = Field(allow_inf_nan=False)
    # A hand-over (`Board.release_and_claim`): the agent's claim released by this grant, applied
    # before it exactly as a ClaimReleased would be; one event, so one write (and one fsync).
    releasing: Released | None = None

    def released(self) -> ClaimReleased | None:
        """The release this grant carries, as the ClaimReleased it stands for (its id, time and author)."""
        if self.releasing is None:
            return None
        return ClaimReleased(id=self.id, at=self.at, by=self.by, claim=self.releasing.claim, done=self.releasing.done,
                             reason=self.releasing.reason)  # fmt: skip


class ClaimRenewed(Decision):
    kind: Literal["claim_renewed"] = "claim_renewed"
    claim: str
    expires_at: float = Field(allow_inf_nan=False)
    runs: int | None = None  # when set: the runs its holder may start under it in all (a repair run granted)


class ClaimReleased(Decision):
    kind: Literal["claim_released"] = "claim_released"
    claim: str
    done: bool  # True: the work is finished (or given up for good); False: back to the pool
    reason: str = ""


class ClaimExpired(Decision):
    kind: Literal["claim_expired"] = "claim_expired"
    claim: str


# --- patches, runs, reviews ---------------------------------------------------------------------


class PatchSubmitted(Event):
    kind: Literal["patch_submitted"] = "patch_submitted"
    patch: str
    arena: str
    hypothesis: str | None = None
    work: str | None = None
    parent: str | None = None  # the patch whose code this one edits
    code: str  # the whole new train.py
    diff: str = ""  # unified diff against the parent's code
    code_hash: str  # the sender's hash of the normalised code; the board recomputes it (rules.patch_hash)


class PatchAccepted(Decision):
    kind: Literal["patch_accepted"] = "patch_accepted"
    patch: str


class PatchRefused(Decision):
    kind: Literal["patch_refused"] = "patch_refused"
    patch: str
    reason: str
    duplicate_of: str | None = None  # the patch with the same normalised code already run


class _RunEvent(Event):
    """What identifies a run: both RunStarted and RunFinished carry it whole."""

    run: str
    patch: str
    arena: str
    work: str | None = None
    seed: int
    purpose: Purpose
    tier: str
    device: str
    node: str


class RunStarted(_RunEvent):
    kind: Literal["run_started"] = "run_started"


class RunFinished(_RunEvent):
    kind: Literal["run_finished"] = "run_finished"
    status: RunStatus
    reason: str | None = None
    val_bpb: float | None = None
    training_seconds: float | None = None
    total_seconds: float | None = None
    tokens: int | None = None
    steps: int | None = None
    params: int | None = None
    peak_memory_mb: float | None = None
    epochs: float | None = None  # training tokens / the training split's tokens
    tokens_per_second: float | None = None
    mfu: float | None = None  # model FLOPs utilisation on a GPU of known peak; None otherwise
    cpu_seconds: float | None = None
    sandbox: str = ""  # the OS sandbox's layers, or "none (untrusted)"
    fingerprint: str
    synthetic: bool = False
    source_hash: str  # sha256 of the raw train.py run (a patch's code_hash is of its normalised code)
    log_tail: str = ""


class RunLost(Decision):
    """A run that will never report: its agent stopped or was lost, and its claim ended before it did."""

    kind: Literal["run_lost"] = "run_lost"
    run: str
    reason: str


class ReviewDone(Event):
    kind: Literal["review_done"] = "review_done"
    review: str
    patch: str
    work: str | None = None
    verdict: Review
    reasons: list[str] = []


# --- verdicts of the promotion rule -------------------------------------------------------------


class ReplicationDone(Decision):
    """A candidate has its seeds; the rule's verdict when it is not (yet) promoted, with why."""

    kind: Literal["replication_done"] = "replication_done"
    patch: str
    arena: str
    n: int
    mean: float
    std: float
    outcome: Outcome
    explanation: str


class BestPromoted(Decision):
    kind: Literal["best_promoted"] = "best_promoted"
    arena: str
    patch: str
    mean: float
    std: float
    n: int
    previous: str | None = None  # the best it replaces; None for the arena's baseline
    previous_mean: float | None = None
    threshold: float | None = None  # the gain it had to beat: max(min_delta, z x spread)
    reason: str


# --- the cascade: winners re-applied to another best ------------------------------------------
#
#   BestPromoted(W) on rung T -> WorkQueued(transfer, arena=T+1's arena, ref=W)
#   TransferPorted(patch=P)   the porter's re-application of W's change to T+1's best, a PatchSubmitted P
#   WorkQueued(replicate) x K, WorkQueued(review); BestPromoted(P) | ReplicationDone(P)
#   TransferDone(outcome=held | lost | not_transferable | failed)
# The same on one rung (a restack): a winner W built on an older parent than the best it displaced
# has the displaced best's change re-applied to W, so the two gains stack instead of replacing.


class TransferPorted(Event):
    """The porter's answer to a transfer work: the re-applied patch, or why there is none."""

    kind: Literal["transfer_ported"] = "transfer_ported"
    work: str  # the transfer work
    source: str  # the winner whose change is re-applied
    arena: str  # where it is re-applied
    patch: str | None = None  # the PatchSubmitted that carries it; None: it could not be re-applied
    method: PortMethod | None = None
    reason: str = ""  # why not, when patch is None


class TransferDone(Decision):
    """The outcome of one transfer, with the gains it had below and above."""

    kind: Literal["transfer_done"] = "transfer_done"
    work: str
    source: str
    from_arena: str
    to_arena: str
    restack: bool = False  # re-applied on its own rung, to the best it did not build on
    patch: str | None = None
    outcome: TransferOutcome
    reason: str
    gain_below: float | None = None  # the source's promotion gain on its own rung
    gain_above: float | None = None  # the re-applied patch's mean gain over the best it was judged against


class AuditScored(Event):
    """A promoted best scored by the harness on the held-out audit split, which no search ever uses.

    For people only: `swarm best`, `swarm show` and the report show it; the decision state does not
    fold it, so nothing an agent reads (claims, best, trials, stats) and no prompt can contain it.
    Published by the device agent that claimed the best's audit work (queued by the board for every
    BestPromoted), which ran the best's code once more and had it scored on the audit split."""

    kind: Literal["audit_scored"] = "audit_scored"
    patch: str
    arena: str
    split: Literal["audit"] = "audit"
    status: RunStatus
    val_bpb: float | None = None
    reason: str = ""
    work: str | None = None  # the audit work it answers
    seed: int | None = None  # of the audit run


# --- accounting and the service -----------------------------------------------------------------


class UsageRecorded(Event):
    """One brain call: tokens and cost, so a swarm-wide budget can stop LLM calls when spent."""

    kind: Literal["usage_recorded"] = "usage_recorded"
    agent: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


class NoteWritten(Event):
    """The lab notebook: what an arena has learned so far, distilled by a brain every N finished trials."""

    kind: Literal["note_written"] = "note_written"
    arena: str
    trials: int  # finished trials of the arena the note covers
    note: str


class LeaderElected(Decision):
    kind: Literal["leader_elected"] = "leader_elected"
    instance: str


AnyEvent = Annotated[
    Union[
        AgentJoined, AgentLeft, ArenaOpened,
        HypothesisProposed, HypothesisApproved, HypothesisRejected,
        WorkQueued, WorkCancelled, ClaimGranted, ClaimRenewed, ClaimReleased, ClaimExpired,
        PatchSubmitted, PatchAccepted, PatchRefused, RunStarted, RunFinished, RunLost, ReviewDone,
        ReplicationDone, BestPromoted, UsageRecorded, NoteWritten, LeaderElected, TransferPorted, TransferDone,
        AuditScored,
    ],
    Field(discriminator="kind"),
]  # fmt: skip
_ADAPTER: TypeAdapter[Event] = TypeAdapter(AnyEvent)
KINDS: dict[str, type[Event]] = {
    cls.model_fields["kind"].default: cls for cls in AnyEvent.__origin__.__args__  # type: ignore[attr-defined]
}


def encode(event: Event) -> bytes:
    data = msgpack.packb(event.model_dump(), use_bin_type=True)
    if len(data) > MAX_EVENT_BYTES:
        raise DecodeError(f"{event.kind} {event.id}: {len(data)} bytes, over the {MAX_EVENT_BYTES} limit")
    return data


def envelope(event: Event) -> Envelope:
    """The event as the bus stores it: its subject, its bytes, its id as the message id."""
    return Envelope(event.subject, encode(event), event.id)


def decode(data: bytes, subject: str | None = None) -> Event:
    """The event in `data`, or DecodeError saying what is wrong with it.

    With `subject`, the event must belong there: a decision stored on a fact's subject (a forgery
    by anything but the service) is refused, and so is a fact on a decision's subject."""
    if len(data) > MAX_EVENT_BYTES:
        raise DecodeError(f"event of {len(data)} bytes, over the {MAX_EVENT_BYTES} limit")
    try:
        obj = msgpack.unpackb(data, raw=False, max_bin_len=MAX_EVENT_BYTES, max_str_len=MAX_EVENT_BYTES)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # the library's own error types
        raise DecodeError(f"not a msgpack record: {exc}") from exc
    if not isinstance(obj, dict):
        raise DecodeError(f"not a record: a msgpack {type(obj).__name__}")
    if obj.get("v") not in READABLE_VERSIONS:
        raise DecodeError(f"schema version {obj.get('v')!r}, this node speaks {SCHEMA_VERSION}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise DecodeError(f"unknown event kind {kind!r}")
    try:
        event = _ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise DecodeError(f"malformed {kind}: {exc.error_count()} problem(s): {exc}") from exc
    if subject is not None and event.subject != subject:
        raise DecodeError(f"a {kind} arrived on {subject}, but it belongs on {event.subject}")
    return event
