"""The service's decisions as pure functions of its state: what a pending item needs next.

`decide(state, kind, item)` looks at one item of `State.pending` (an arena, a hypothesis, a patch,
a candidate, a run) and returns the next decision for it, or None when it needs nothing now. It
reads the state and changes nothing: the decision takes effect when the service has stored it and
the state has folded it back from the stream. The numbers (means, spreads, the promotion verdict)
come from `blackboard.rules`.
"""

from __future__ import annotations

from blackboard import cascade, rules
from blackboard.events import (
    BestPromoted, Decision, HypothesisApproved, HypothesisRejected, PatchAccepted, PatchRefused, ReplicationDone,
    RunLost, WorkCancelled, WorkQueued, new_id,
)  # fmt: skip
from blackboard.state import Patch, State

SERVICE = "service"  # who the state's decisions name; the service signs them with its instance on publishing
MAX_BASELINE_RETRIES = 2  # failed baseline seeds re-queued per arena before we give up


def decide(state: State, kind: str, item: str) -> Decision | None:
    """The next decision for a pending item, or None if it needs none now."""
    if kind == "arena":
        return _decide_arena(state, item)
    if kind == "hypothesis":
        return _decide_hypothesis(state, item)
    if kind == "patch":
        return _decide_patch(state, item)
    if kind == "candidate":
        return _decide_candidate(state, item)
    if kind == "winner":
        return cascade.decide_winner(state, item)
    if kind == "transfer":
        return cascade.decide_transfer(state, item)
    if kind == "audit":
        return _decide_audit(state, item)
    if kind == "run":
        return RunLost(by=SERVICE, run=item, reason=state.lost[item]) if item in state.running else None
    raise ValueError(f"unknown pending item kind {kind!r}")


def _queue(kind: str, arena: str, ref: str, seed: int | None = None, priority: int = 0) -> WorkQueued:
    return WorkQueued(by=SERVICE, work=new_id("w"), work_kind=kind, arena=arena, ref=ref, seed=seed, priority=priority)  # type: ignore[arg-type]


def _decide_arena(state: State, arena_id: str) -> Decision | None:
    arena = state.arenas[arena_id]
    base = state.patches[arena.baseline_patch]
    if arena.best is not None or base.settled:
        return None
    seeds = state.settings.promotion_seeds
    queued = [state.work[w] for w in state.work_by_ref.get(base.id, []) if state.work[w].kind == "baseline"]
    if not queued and cascade.waits_for_a_climber(state, arena):
        return None
    values = base.ok_values()
    if len(values) >= seeds:
        return BestPromoted(
            by=SERVICE, arena=arena_id, patch=base.id, mean=rules.mean(values), std=rules.std(values), n=len(values),
            reason=f"the baseline, over {len(values)} seeds",
        )  # fmt: skip
    open_work = [w for w in queued if w.status != "done"]
    failed = sum(1 for run in base.runs if run.status != "ok" or run.val_bpb is None)
    if len(values) + len(open_work) < seeds and failed <= MAX_BASELINE_RETRIES:
        used = {w.seed for w in queued}
        seed = next(s for s in range(seeds + MAX_BASELINE_RETRIES + 1) if s not in used)
        return _queue("baseline", arena_id, base.id, seed=seed, priority=10)
    if not open_work:
        return ReplicationDone(
            by=SERVICE, patch=base.id, arena=arena_id, n=len(values), mean=rules.mean(values), std=rules.std(values),
            outcome="failed", explanation=f"the baseline failed on {failed} of {len(base.runs)} seeds, so this "
            "arena has no best to build on; see those runs' reasons (swarm history --status crash)",
        )  # fmt: skip
    return None


def _decide_audit(state: State, patch_id: str) -> WorkQueued | None:
    """A promoted best's audit work, once: a device agent runs it again and scores it on the audit split.
    Lowest priority: it measures the search, it is not part of it."""
    patch = state.patches[patch_id]
    if any(state.work[w].kind == "audit" for w in state.work_by_ref.get(patch_id, [])):
        return None
    return _queue("audit", patch.arena, patch_id, seed=0, priority=-1)


def _decide_hypothesis(state: State, hyp_id: str) -> Decision | None:
    hyp = state.hypotheses[hyp_id]
    if hyp.status == "proposed":
        if hyp.arena not in state.arenas:
            return HypothesisRejected(by=SERVICE, hypothesis=hyp_id, reason=f"unknown arena {hyp.arena}")
        if hyp.parent is not None and state.patches.get(hyp.parent, None) is None:
            return HypothesisRejected(by=SERVICE, hypothesis=hyp_id, reason=f"unknown parent patch {hyp.parent}")
        if (first := state.ideas.get(hyp.key)) is not None:
            return HypothesisRejected(
                by=SERVICE, hypothesis=hyp_id, duplicate_of=first,
                reason=f"the same idea on the same parent was proposed before as {first}",
            )  # fmt: skip
        return HypothesisApproved(by=SERVICE, hypothesis=hyp_id)
    if hyp.status == "approved" and not state.work_by_ref.get(hyp_id):
        return _queue("implement", hyp.arena, hyp_id, seed=0)
    return None


def _decide_patch(state: State, patch_id: str) -> Decision | None:
    patch = state.patches[patch_id]
    if patch.status != "submitted":
        return None
    if patch.arena not in state.arenas:
        return PatchRefused(by=SERVICE, patch=patch_id, reason=f"unknown arena {patch.arena}")
    if not patch.code_hash:
        return PatchRefused(by=SERVICE, patch=patch_id, reason="the code does not parse as Python")
    if (other := state.hashes.get((patch.arena, patch.code_hash))) is not None:
        return PatchRefused(
            by=SERVICE, patch=patch_id, duplicate_of=other,
            reason=f"the same code (after normalisation) was already submitted or run here as {other}",
        )  # fmt: skip
    return PatchAccepted(by=SERVICE, patch=patch_id)


def _decide_candidate(state: State, patch_id: str) -> Decision | None:
    patch = state.patches.get(patch_id)
    arena = state.arenas.get(patch.arena) if patch else None
    if patch is None or arena is None or arena.best is None or patch.settled or patch.id == arena.best:
        return None
    settings, best = state.settings, state.best_values(patch.arena)
    values = patch.ok_values()
    explore = [run for run in patch.runs if run.purpose == "explore"]
    if not patch.candidate:
        ok = [run.val_bpb for run in explore if run.status == "ok" and run.val_bpb is not None]
        transferred = patch.transfer is not None and patch.status == "accepted"  # it won below: no explore run
        if not transferred and (not ok or not rules.is_candidate(ok[0], rules.mean(best), settings.min_delta)):
            return None
        return _next_candidate_work(state, patch)
    if patch.review == "reject" and (cancel := _cancel_queued(state, patch, "the candidate was rejected in review")):
        return cancel
    if (futile := state.hopeless(patch)) is not None:
        return _stop_early(state, patch, futile)
    if (work := _next_candidate_work(state, patch)) is not None:
        return work
    if any(state.work[w].status != "done" for w in state.work_by_ref.get(patch_id, [])):
        return None  # replications or the review still under way
    verdict = rules.promotion_verdict(
        values, best, state.spread(patch.arena), seeds=settings.promotion_seeds,
        min_delta=settings.min_delta, z=settings.z, review=patch.review,  # type: ignore[arg-type]
    )  # fmt: skip
    if verdict.promote:
        return BestPromoted(
            by=SERVICE, arena=patch.arena, patch=patch_id, mean=verdict.mean, std=rules.std(values), n=len(values),
            previous=arena.best, previous_mean=rules.mean(best), threshold=verdict.threshold, reason=verdict.explanation,
        )  # fmt: skip
    return ReplicationDone(
        by=SERVICE, patch=patch_id, arena=patch.arena, n=len(values), mean=rules.mean(values),
        std=rules.std(values), outcome=verdict.outcome, explanation=verdict.explanation,  # type: ignore[arg-type]
    )  # fmt: skip


def _stop_early(state: State, patch: Patch, why: str) -> Decision | None:
    """A hopeless candidate (`State.hopeless`): its queued seeds and review are cancelled, and once
    the runs already granted are in (one may change the answer) it is decided not better."""
    if cancel := _cancel_queued(state, patch, f"the candidate is hopeless: {why}"):
        return cancel
    if any(state.work[w].status != "done" for w in state.work_by_ref.get(patch.id, [])):
        return None
    values = patch.ok_values()
    return ReplicationDone(
        by=SERVICE, patch=patch.id, arena=patch.arena, n=len(values), mean=rules.mean(values),
        std=rules.std(values), outcome="not_better", explanation=why,
    )  # fmt: skip


def _cancel_queued(state: State, patch: Patch, reason: str) -> WorkCancelled | None:
    """The cancelling of the candidate's first work still queued, or None when none is."""
    for work_id in state.work_by_ref.get(patch.id, []):
        if state.work[work_id].status == "queued":
            return WorkCancelled(by=SERVICE, work=work_id, reason=reason)
    return None


def _next_candidate_work(state: State, patch: Patch) -> WorkQueued | None:
    """Replications up to K seeds in all, then one review; None when both are queued."""
    queued = [state.work[w] for w in state.work_by_ref.get(patch.id, [])]
    if patch.review != "reject":
        seeds_planned = state.seeds_planned(patch, "replicate")
        if len(seeds_planned) < state.settings.promotion_seeds:
            seed = next(s for s in range(1_000_000) if s not in seeds_planned)
            return _queue("replicate", patch.arena, patch.id, seed=seed, priority=5)
    if not any(w.kind == "review" for w in queued):
        return _queue("review", patch.arena, patch.id, priority=5)
    return None
