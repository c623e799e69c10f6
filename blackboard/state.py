"""The service's decision state: a fold over the stream, in stream order, kept in memory.

The DuckDB projection answers queries; this answers "what is the next piece of work" and "what
must be decided" in microseconds. Both are built from the same events in the same order.

Decisions are a function of the state, never a memory of what this process did: `pending` holds
the items that may need one (an undecided hypothesis, a candidate without its replications...) and
`blackboard.decisions.decide` returns the next decision for an item, or None when it needs nothing
more. A leader that dies between two decisions leaves nothing half done: its successor finds the
same item pending. This module folds and keeps the work queues; it decides nothing.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Container, Iterable

from blackboard import rules
from blackboard.events import (
    ArenaOpened, BestPromoted, ClaimExpired, ClaimGranted, ClaimReleased, ClaimRenewed, Decision, Event,
    HypothesisApproved, HypothesisProposed, HypothesisRejected, PatchAccepted, PatchRefused, PatchSubmitted,
    ReplicationDone, ReviewDone, RunFinished, RunLost, RunStarted, TransferDone, TransferPorted, WorkCancelled,
    WorkQueued,
)  # fmt: skip
from swarm.ground.settings import BoardSettings

DEVICE_WORK = ("implement", "baseline", "replicate", "promote")  # kinds whose claim leads to a run
REPAIRABLE = ("crash", "rejected", "oom", "timeout", "diverged", "over_budget")  # run outcomes an implementer may repair under the same claim


@dataclass
class Work:
    id: str
    kind: str
    arena: str
    ref: str
    seed: int | None
    tier: str | None
    priority: int
    order: int  # stream sequence of WorkQueued: first queued, first served within a priority
    status: str = "queued"  # queued | claimed | done
    claim: str | None = None
    cancelled: bool = False  # done by a WorkCancelled, not by its work: its seed was never measured


@dataclass
class Claim:
    id: str
    work: str
    agent: str
    expires_at: float
    allowed: int = 1  # runs its holder may start under it: one, and one more per repair granted
    started: int = 0  # runs its holder started under it


@dataclass
class Run:
    id: str
    arena: str
    seed: int
    purpose: str
    status: str
    val_bpb: float | None
    reason: str | None = None


@dataclass
class Patch:
    id: str
    arena: str
    code: str
    code_hash: str
    hypothesis: str | None = None
    parent: str | None = None
    diff: str = ""
    status: str = "submitted"  # submitted | accepted | refused
    reason: str = ""
    duplicate_of: str | None = None
    runs: list[Run] = field(default_factory=list)
    review: str | None = None  # approve | reject
    candidate: bool = False  # replication queued
    settled: bool = False  # BestPromoted or ReplicationDone published
    outcome: str | None = None  # once settled: "promoted", or ReplicationDone's outcome
    explanation: str = ""
    gain: float | None = None  # promoted: the previous best's mean minus its own
    displaced: str | None = None  # promoted: the best it replaced
    transfer: str | None = None  # the transfer work whose re-applied change this patch is

    def ok_values(self) -> list[float]:
        """val_bpb of its successful runs in its own arena (a promotion run on a higher tier is elsewhere),
        one per seed: the first stored. A seed run twice (a late result from a holder whose claim
        expired, beside the re-granted run) is one measurement of the noise, not two, so the promotion
        rule's n and spread count it once; the first in stream order is the one every fold picks and
        the one earlier decisions (a candidate's explore value) already rested on."""
        values: dict[int, float] = {}
        for r in self.runs:
            if r.arena == self.arena and r.status == "ok" and r.val_bpb is not None:
                values.setdefault(r.seed, r.val_bpb)
        return list(values.values())


@dataclass
class Arena:
    id: str
    baseline_patch: str
    fingerprint: str | None = None  # of the harness its results must come from
    best: str | None = None
    patches: list[str] = field(default_factory=list)  # every patch run or submitted here, in order
    tier: str = ""


@dataclass
class Transfer:
    """A winner's change on its way to another arena's best (or, a restack, to its own arena's)."""

    work: str
    source: str  # the winner
    from_arena: str
    to_arena: str
    restack: bool
    patch: str | None = None  # the re-applied patch, once submitted
    method: str | None = None
    unportable: bool = False  # the porter said it cannot be re-applied (reason)
    reason: str = ""
    outcome: str | None = None  # TransferDone's


@dataclass
class Hypothesis:
    id: str
    arena: str
    parent: str | None
    key: str
    title: str
    rationale: str
    intent: dict[str, object]
    status: str = "proposed"  # proposed | approved | rejected
    reason: str = ""
    duplicate_of: str | None = None


class State:
    def __init__(self, settings: BoardSettings) -> None:
        self.settings = settings
        self.applied_seq = 0
        self.decision_seq = 0  # sequence of the last decision applied: the expected-sequence guard
        self.arenas: dict[str, Arena] = {}
        self.hypotheses: dict[str, Hypothesis] = {}
        self.ideas: dict[str, str] = {}  # idea key -> first hypothesis with it
        self.patches: dict[str, Patch] = {}
        self.hashes: dict[tuple[str, str], str] = {}  # (arena, code hash) -> the patch that holds it
        self.work: dict[str, Work] = {}
        self.work_by_ref: dict[str, list[str]] = {}
        self.claims: dict[str, Claim] = {}
        self.held: dict[str, set[str]] = {}  # agent -> its claims
        self.queues: dict[tuple[str, str], list[tuple[int, int, str]]] = {}  # (arena, kind) -> heap
        self.pending: dict[tuple[str, str], None] = {}  # items that may need a decision, in order
        self.set_aside: list[tuple[int, int, str]] = []  # queue entries of taken work (see next_work)
        self.runs_started = 0
        self.runs_finished = 0
        self.running: dict[str, tuple[str | None, str]] = {}  # run -> (its work, its agent)
        self.lost: dict[str, str] = {}  # runs declared lost (or about to be) -> why
        self.transfers: dict[str, Transfer] = {}  # transfer work -> its transfer
        self.winners: list[str] = []  # patches promoted over a previous best, in order: what may climb
        self.refused: dict[str, str] = {}  # results from a harness that is not their arena's -> why
        # Kept as events are applied, so that a grant's questions do not walk the whole history:
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (arena, work kind, work status) -> work items
        self.open_candidates: set[str] = set()  # candidates not settled yet (a rejection in review is still here)
        self._noisy: dict[str, set[str]] = {}  # arena -> its patches with two or more ok seeds: what `spread` pools
        self._position: dict[str, int] = {}  # patch -> its place in its arena's `patches`
        self.patches_of: dict[str, list[str]] = {}  # hypothesis -> its patches, in order
        self._spreads: dict[str, float | None] = {}  # arena -> `spread`, until its next result

    # --- folding events ---------------------------------------------------------------------

    def apply(self, event: Event, seq: int) -> None:
        if seq <= self.applied_seq:
            return
        self.applied_seq = seq
        if isinstance(event, Decision):
            self.decision_seq = seq
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event, seq)

    def _on_arena_opened(self, e: ArenaOpened, seq: int) -> None:
        if e.arena in self.arenas:
            return
        self.arenas[e.arena] = Arena(e.arena, e.baseline_patch, e.fingerprint, tier=e.tier)
        self._add_patch(Patch(e.baseline_patch, e.arena, e.baseline_code, e.baseline_hash, status="accepted"))
        self.hashes[(e.arena, e.baseline_hash)] = e.baseline_patch
        self._pend("arena", e.arena)

    def _on_hypothesis_proposed(self, e: HypothesisProposed, seq: int) -> None:
        if e.hypothesis in self.hypotheses:
            return
        # The baseline named or implied is one parent: an idea on it is the same idea either way.
        parent = e.parent or (self.arenas[e.arena].baseline_patch if e.arena in self.arenas else None)
        key = rules.idea_key(e.arena, parent, e.title, e.intent)
        self.hypotheses[e.hypothesis] = Hypothesis(e.hypothesis, e.arena, e.parent, key, e.title, e.rationale, e.intent)
        self._pend("hypothesis", e.hypothesis)

    def _on_hypothesis_approved(self, e: HypothesisApproved, seq: int) -> None:
        if (hyp := self.hypotheses.get(e.hypothesis)) is not None and hyp.status == "proposed":
            hyp.status = "approved"
            self.ideas.setdefault(hyp.key, hyp.id)
            self._pend("hypothesis", hyp.id)  # it needs its implement work next

    def _on_hypothesis_rejected(self, e: HypothesisRejected, seq: int) -> None:
        if (hyp := self.hypotheses.get(e.hypothesis)) is not None and hyp.status == "proposed":
            hyp.status, hyp.reason, hyp.duplicate_of = "rejected", e.reason, e.duplicate_of

    def _on_patch_submitted(self, e: PatchSubmitted, seq: int) -> None:
        if e.patch in self.patches:
            return
        code_hash = rules.patch_hash(e.code)  # the service's own hash, not the sender's claim
        self._add_patch(Patch(e.patch, e.arena, e.code, code_hash, e.hypothesis, e.parent, e.diff))
        self._pend("patch", e.patch)
        if (transfer := self.transfers.get(e.work or "")) is not None and transfer.patch is None:
            transfer.patch, self.patches[e.patch].transfer = e.patch, transfer.work
            self._pend("transfer", transfer.work)

    def _on_patch_accepted(self, e: PatchAccepted, seq: int) -> None:
        if (patch := self.patches.get(e.patch)) is not None and patch.status == "submitted":
            patch.status = "accepted"
            self.hashes.setdefault((patch.arena, patch.code_hash), patch.id)
            if patch.transfer is not None:  # a transferred winner is a candidate without an explore run
                self._pend("candidate", patch.id)

    def _on_patch_refused(self, e: PatchRefused, seq: int) -> None:
        if (patch := self.patches.get(e.patch)) is not None and patch.status == "submitted":
            patch.status, patch.reason, patch.duplicate_of = "refused", e.reason, e.duplicate_of
            if patch.transfer is not None:
                self._pend("transfer", patch.transfer)

    def _on_work_queued(self, e: WorkQueued, seq: int) -> None:
        if e.work in self.work:
            return
        work = Work(e.work, e.work_kind, e.arena, e.ref, e.seed, e.tier, e.priority, seq)
        self.work[work.id] = work
        self.counts[(work.arena, work.kind, work.status)] += 1
        self.work_by_ref.setdefault(e.ref, []).append(work.id)
        self._enqueue(work)
        if e.work_kind in ("replicate", "review") and (patch := self.patches.get(e.ref)) is not None:
            patch.candidate = True
            if not patch.settled:
                self.open_candidates.add(patch.id)
        if e.work_kind == "transfer" and (source := self.patches.get(e.ref)) is not None:
            self.transfers[e.work] = Transfer(e.work, e.ref, source.arena, e.arena, restack=source.arena == e.arena)

    def _on_work_cancelled(self, e: WorkCancelled, seq: int) -> None:
        if (work := self.work.get(e.work)) is not None and work.status != "done":
            work.cancelled = True
        self._close(e.work)

    def _on_claim_granted(self, e: ClaimGranted, seq: int) -> None:
        if (released := e.released()) is not None:  # a hand-over: its release first
            self._on_claim_released(released, seq)
        work = self.work.get(e.work)
        if work is None or work.status != "queued" or e.claim in self.claims:
            return
        self._move(work, "claimed", e.claim)
        self.claims[e.claim] = Claim(e.claim, e.work, e.agent, e.expires_at)
        self.held.setdefault(e.agent, set()).add(e.claim)

    def _on_claim_renewed(self, e: ClaimRenewed, seq: int) -> None:
        if (claim := self.claims.get(e.claim)) is not None:
            claim.expires_at = max(claim.expires_at, e.expires_at)
            claim.allowed = max(claim.allowed, e.runs or 0)

    def _on_claim_released(self, e: ClaimReleased, seq: int) -> None:
        claim = self._drop_claim(e.claim)
        if claim is not None:
            if e.done:
                self._close(claim.work)
            else:
                self._requeue(claim.work)
                self._lose_runs(claim, f"its agent {claim.agent} stopped before it finished ({e.reason})")

    def _on_claim_expired(self, e: ClaimExpired, seq: int) -> None:
        claim = self._drop_claim(e.claim)
        if claim is not None:
            self._requeue(claim.work)
            self._lose_runs(claim, f"its agent {claim.agent} stopped renewing its claim before the run finished")

    def _lose_runs(self, claim: Claim, reason: str) -> None:
        """Runs the claim's holder started on its work and never finished: each needs a RunLost."""
        for run, (work, agent) in self.running.items():
            if work == claim.work and agent == claim.agent:
                self.lost.setdefault(run, reason)
                self._pend("run", run)

    def _on_run_started(self, e: RunStarted, seq: int) -> None:
        if e.run not in self.running and e.run not in self.lost:
            self.runs_started += 1
            self.running[e.run] = (e.work, e.by)
            if (claim := self._claim_of(e.work, e.by)) is not None:
                claim.started += 1

    def _on_run_lost(self, e: RunLost, seq: int) -> None:
        self.running.pop(e.run, None)
        self.lost[e.run] = e.reason

    def _on_run_finished(self, e: RunFinished, seq: int) -> None:
        patch = self.patches.get(e.patch)
        if patch is not None and any(run.id == e.run for run in patch.runs):
            return  # the same result again (republished under another event id): counted once
        if self.running.pop(e.run, None) is None and e.run not in self.lost:
            self.runs_started += 1  # its RunStarted never came
        self.runs_finished += 1
        arena = self.arenas.get(e.arena)
        if (why := rules.foreign_result(e.fingerprint, arena.fingerprint if arena else None)) is not None:
            self.refused[e.run] = why  # the projection shows it refused; no decision may rest on it
            return
        if e.work is not None and not (e.status in REPAIRABLE and self._claim_of(e.work, e.by) is not None
                                       and self.work[e.work].kind == "implement"):  # fmt: skip
            self._close(e.work)  # a crashed implement run's holder may repair under its claim: its release closes it
        if patch is None:
            return
        patch.runs.append(Run(e.run, e.arena, e.seed, e.purpose, e.status, e.val_bpb, e.reason))
        if patch.id in self._position and len(patch.ok_values()) >= 2:
            self._noisy.setdefault(patch.arena, set()).add(patch.id)
            self._spreads.pop(patch.arena, None)
        if e.status == "ok":
            self.hashes.setdefault((patch.arena, patch.code_hash), patch.id)
        item = "arena" if patch.id == self._baseline_of(patch.arena) else "candidate"
        self._pend(item, patch.arena if item == "arena" else patch.id)

    def _on_review_done(self, e: ReviewDone, seq: int) -> None:
        if e.work is not None:
            self._close(e.work)
        if (patch := self.patches.get(e.patch)) is not None:
            patch.review = e.verdict
            self._pend("candidate", patch.id)

    def _on_best_promoted(self, e: BestPromoted, seq: int) -> None:
        arena = self.arenas.get(e.arena)
        if arena is None:
            return
        first = arena.best is None
        arena.best = e.patch
        if (patch := self.patches.get(e.patch)) is not None:
            patch.settled, patch.outcome, patch.displaced = True, "promoted", e.previous
            self.open_candidates.discard(patch.id)
            if e.previous_mean is not None:
                patch.gain = e.previous_mean - e.mean
            if e.previous is not None:  # a winner: it may climb the ladder, or need restacking
                self.winners.append(patch.id)
                self._pend("winner", patch.id)
                for other in self.arenas.values():  # an upper rung's baseline may wait for it (board.lazy_upper)
                    if other.best is None:
                        self._pend("arena", other.id)
            if patch.transfer is not None:
                self._pend("transfer", patch.transfer)
            self._pend("audit", patch.id)  # every best is scored once on the audit split, for people only
        if first:  # results that came in before there was a best to beat can be judged now
            for patch_id in arena.patches:
                self._pend("candidate", patch_id)
            for winner in self.winners:  # a rung that has a best now can take what climbs to it
                self._pend("winner", winner)

    def _on_replication_done(self, e: ReplicationDone, seq: int) -> None:
        if (patch := self.patches.get(e.patch)) is not None:
            patch.settled, patch.outcome, patch.explanation = True, e.outcome, e.explanation
            self.open_candidates.discard(patch.id)
            if patch.transfer is not None:
                self._pend("transfer", patch.transfer)

    def _on_transfer_ported(self, e: TransferPorted, seq: int) -> None:
        if (transfer := self.transfers.get(e.work)) is not None and transfer.outcome is None:
            transfer.method, transfer.reason = e.method, e.reason
            transfer.unportable = e.patch is None
            self._pend("transfer", e.work)

    def _on_transfer_done(self, e: TransferDone, seq: int) -> None:
        if (transfer := self.transfers.get(e.work)) is not None:
            transfer.outcome = e.outcome

    # --- bookkeeping ------------------------------------------------------------------------------

    def _add_patch(self, patch: Patch) -> None:
        self.patches[patch.id] = patch
        if patch.hypothesis is not None:
            self.patches_of.setdefault(patch.hypothesis, []).append(patch.id)
        if (arena := self.arenas.get(patch.arena)) is not None:
            self._position[patch.id] = len(arena.patches)
            arena.patches.append(patch.id)

    def _baseline_of(self, arena: str) -> str | None:
        return self.arenas[arena].baseline_patch if arena in self.arenas else None

    def _pend(self, kind: str, item: str) -> None:
        self.pending[(kind, item)] = None

    def _enqueue(self, work: Work) -> None:
        heapq.heappush(self.queues.setdefault((work.arena, work.kind), []), (-work.priority, work.order, work.id))

    def _requeue(self, work_id: str) -> None:
        work = self.work.get(work_id)
        if work is not None and work.status == "claimed":
            self._move(work, "queued", None)
            self._enqueue(work)  # its original place: priority, then the order it was first queued

    def _close(self, work_id: str) -> None:
        work = self.work.get(work_id)
        if work is None or work.status == "done":
            return
        if work.claim is not None and (claim := self._drop_claim(work.claim)) is not None:
            # closed by another's result (a late one from an earlier holder): the holder's run is void
            self._lose_runs(claim, "its work was finished by another holder's result")
        self._move(work, "done", None)
        if work.kind in ("replicate", "review"):
            self._pend("candidate", work.ref)
        elif work.kind == "baseline":
            self._pend("arena", work.arena)
        elif work.kind == "transfer":
            self._pend("transfer", work.id)

    def _move(self, work: Work, status: str, claim: str | None) -> None:
        self.counts[(work.arena, work.kind, work.status)] -= 1
        self.counts[(work.arena, work.kind, status)] += 1
        work.status, work.claim = status, claim

    def _claim_of(self, work_id: str | None, agent: str) -> Claim | None:
        """The claim `agent` holds on the work, if it does."""
        work = self.work.get(work_id or "")
        claim = self.claims.get(work.claim or "") if work is not None else None
        return claim if claim is not None and claim.agent == agent else None

    def _drop_claim(self, claim_id: str) -> Claim | None:
        claim = self.claims.pop(claim_id, None)
        if claim is not None:
            self.held.get(claim.agent, set()).discard(claim_id)
        return claim

    # --- questions the service asks -----------------------------------------------------------------

    def next_work(self, kinds: Iterable[str], arenas: Iterable[str], taken: Container[str] = ()) -> Work | None:
        """The first queued work of the first kind that has some, over the given arenas ("*": any;
        "tiny/*": any of that tier), passing over `taken` (granted by decisions not yet applied)."""
        arenas = list(arenas)
        if any(arena.endswith("*") for arena in arenas):
            prefixes = tuple(arena[:-1] for arena in arenas if arena.endswith("*"))
            arenas = [arena for arena in self.arenas if arena.startswith(prefixes) or arena in arenas]
        for kind in kinds:
            best: tuple[int, int, str] | None = None
            for arena in arenas:
                heap = self.queues.get((arena, kind), [])
                while heap and (self.work[heap[0][2]].status != "queued" or heap[0][2] in taken):
                    entry = heapq.heappop(heap)  # stale: claimed or closed since it was pushed
                    if self.work[entry[2]].status == "queued":
                        self.set_aside.append(entry)  # taken: back with `put_back` unless its grant is applied
                if heap and (best is None or heap[0] < best):
                    best = heap[0]
            if best is not None:
                return self.work[best[2]]
        return None

    def put_back(self) -> None:
        """Work that `next_work` passed over as taken, to its queue again if its grant never came."""
        for entry in self.set_aside:
            if self.work[entry[2]].status == "queued":
                heapq.heappush(self.queues[(self.work[entry[2]].arena, self.work[entry[2]].kind)], entry)
        self.set_aside.clear()

    def queue_depths(self, arena: str | None = None) -> dict[str, int]:
        """Work queued, by kind (in `arena`, or in all)."""
        depths: dict[str, int] = {}
        for (where, kind, status), count in self.counts.items():
            if status == "queued" and count and (arena is None or where == arena):
                depths[kind] = depths.get(kind, 0) + count
        return depths

    def trials(self, arena: str) -> list[dict[str, object]]:
        """Every patch tried in the arena with its outcome: what an ideator conditions on."""
        found = self.arenas.get(arena)
        rows = []
        for patch_id in found.patches if found else []:
            patch = self.patches[patch_id]
            runs = [run for run in patch.runs if run.arena == arena]
            if not runs:
                continue
            values = patch.ok_values()
            hyp = self.hypotheses.get(patch.hypothesis or "")
            rows.append({"patch": patch_id, "parent": patch.parent, "title": hyp.title if hyp else "baseline", "n": len(values),
                         "status": "ok" if values else runs[-1].status, "reason": None if values else runs[-1].reason,
                         "val_bpb": rules.mean(values) if values else None, "best": patch_id == found.best})  # type: ignore[union-attr]  # fmt: skip
        return rows

    def device_work_left(self, max_runs: int | None, granting: int = 0) -> bool:
        """Whether another run may be granted under the swarm's run budget, `granting` more on the way."""
        return max_runs is None or self.runs_left(max_runs, granting) > 0

    def runs_left(self, max_runs: int, granting: int = 0) -> int:
        """Runs of the budget not yet started nor granted, `granting` more on the way."""
        return max_runs - self.runs_started - self.runs_reserved() - granting

    def seeds_planned(self, patch: Patch, kind: str) -> set[int | None]:
        """The seeds a patch has run, or has work of `kind` queued or done for (not cancelled)."""
        return {run.seed for run in patch.runs} | {self.work[w].seed for w in self.work_by_ref.get(patch.id, [])
                                                   if self.work[w].kind == kind and not self.work[w].cancelled}  # fmt: skip

    def hopeless(self, patch: Patch) -> str | None:
        """Why an open candidate cannot be promoted whatever its remaining seeds are likely to score
        (`rules.futility`), or None."""
        if not patch.candidate or patch.settled or patch.review == "reject" or patch.arena not in self.arenas:
            return None
        settings = self.settings
        return rules.futility(patch.ok_values(), self.best_values(patch.arena), self.spread(patch.arena),
                              seeds=settings.promotion_seeds, min_delta=settings.min_delta, z=settings.z,
                              futility_z=settings.futility_z)  # fmt: skip

    def runs_reserved(self) -> int:
        """Runs granted and not yet started: each device claim's allowance less the runs it started."""
        return sum(max(0, c.allowed - c.started) for c in self.claims.values() if self.work[c.work].kind in DEVICE_WORK)

    def expired(self, now: float) -> list[Claim]:
        return [claim for claim in self.claims.values() if claim.expires_at <= now]

    def best_values(self, arena: str) -> list[float]:
        best = self.arenas[arena].best if arena in self.arenas else None
        return self.patches[best].ok_values() if best else []

    def spread(self, arena: str) -> float | None:
        """The arena's seed noise (`rules.seed_spread`) over its patches with two or more ok seeds, in
        the arena's order: kept until such a patch's next result, and never a walk over every patch."""
        if arena not in self._spreads:
            noisy = sorted(self._noisy.get(arena, ()), key=self._position.__getitem__)
            self._spreads[arena] = rules.seed_spread([self.patches[p].ok_values() for p in noisy])
        return self._spreads[arena]
