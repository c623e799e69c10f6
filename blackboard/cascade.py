"""The cascade's decisions, pure functions of the state like `blackboard.decisions`: what climbs
the ladder of tiers (`board.ladder`), what is restacked on its own rung, and each transfer's outcome.

A winner (a patch promoted over a previous best) gets, as pending item ("winner", patch):
- a restack, when it was built on an older parent than the best it displaced: the displaced best's
  change (from the winner's parent to it) is re-applied to the current best, so both gains stack;
- a transfer to every arena of the next rung that has a best: its change (from its parent to it) is
  re-applied to that arena's best. A rung with no arena yet (no node serves it) or no best yet
  takes it later: the winner is pended again when an arena gets its first best, so nothing is lost.
A transfer's re-applied patch is a candidate without an explore run (it won below): it is
replicated with the promotion seeds, reviewed and decided by the same noise rule as any candidate,
and ("transfer", work) then needs its one `TransferDone`.
"""

from __future__ import annotations

from typing import Any

from blackboard import rules
from blackboard.events import TransferDone, TransferOutcome, WorkQueued, new_id
from blackboard.state import Arena, Patch, State, Transfer

SERVICE = "service"
TRANSFER_PRIORITY = 3  # after baselines (10) and replications (5), before new ideas (0)
_OUTCOMES: dict[str, TransferOutcome] = {"promoted": "held", "not_better": "lost"}  # any other verdict: failed


def next_rung(state: State, tier: str) -> str | None:
    """The tier above `tier` on the ladder, or None at its top (or off it)."""
    ladder = state.settings.ladder
    return ladder[ladder.index(tier) + 1] if tier in ladder[:-1] else None


def rung_arenas(state: State, tier: str) -> list[Arena]:
    return [arena for arena in state.arenas.values() if arena.tier == tier]


def waits_for_a_climber(state: State, arena: Arena) -> bool:
    """An upper rung's arena before any winner of the rung below (board.lazy_upper): its baseline waits,
    so the devices that serve both rungs work the cheap one first. The first winner below starts it."""
    ladder = state.settings.ladder
    if not state.settings.lazy_upper or arena.tier not in ladder[1:]:
        return False
    below = ladder[ladder.index(arena.tier) - 1]
    return not any(state.arenas[state.patches[w].arena].tier == below for w in state.winners)


def decide_winner(state: State, patch_id: str) -> WorkQueued | None:
    """The next transfer a winner needs queued: its restack, then one per next-rung arena with a best."""
    winner = state.patches[patch_id]
    arena = state.arenas[winner.arena]
    queued = {t.to_arena for t in state.transfers.values() if t.source == patch_id}
    parent = winner.parent or arena.baseline_patch
    if (state.settings.restack and winner.displaced not in (None, parent) and arena.id not in queued
            and arena.best == patch_id):  # fmt: skip
        return _queue(arena, patch_id)
    upper = next_rung(state, arena.tier)
    for target in rung_arenas(state, upper) if upper else []:
        if target.best is not None and target.id not in queued:
            return _queue(target, patch_id)
    return None


def runs_to_finish(state: State) -> int:
    """Runs the work already begun still needs, beyond those granted: queued baselines, replications
    and promotions; the seeds an open candidate has not queued yet; each climb in progress (a
    winner's transfer to an upper-rung arena, or a restack, with no re-applied patch yet) the
    promotion seeds its patch will need; an explore under way, the seeds it needs if it makes a
    candidate; and, for a rung with an open candidate or an explore under way, the climb a win would
    start (the upper rung's baseline, if it still waits for a climber, and the transfer's seeds).
    What `board.max_runs` keeps back from new ideas near its end, so a run budget ends with decided
    climbs rather than a half-measured one (see `Requests`). A hopeless candidate needs nothing."""
    seeds, depths = state.settings.promotion_seeds, state.queue_depths()
    queued = sum(depths.get(kind, 0) for kind in ("baseline", "replicate", "promote"))
    for arena in state.arenas.values():  # a baseline still to be queued (its arena just opened or woke)
        base = state.patches[arena.baseline_patch]
        if arena.best is None and not base.settled and not waits_for_a_climber(state, arena):
            queued += max(0, seeds - len(state.seeds_planned(base, "baseline")))
    hoping: set[str] = set()  # arenas with an open candidate or an explore under way
    for patch in map(state.patches.__getitem__, state.open_candidates):
        if patch.review == "reject":
            continue
        if state.hopeless(patch) is not None:
            queued -= sum(1 for w in state.work_by_ref.get(patch.id, [])  # about to be cancelled
                          if state.work[w].status == "queued" and state.work[w].kind == "replicate")
            continue
        queued += max(0, seeds - len(state.seeds_planned(patch, "replicate")))
        hoping.add(patch.arena)
    for (arena, kind, status), count in state.counts.items():  # an explore under way may make a candidate
        if kind == "implement" and status == "claimed" and count:
            queued += (seeds - 1) * count
            hoping.add(arena)
    for arena_id in hoping:  # the climb its win would start
        upper = next_rung(state, state.arenas[arena_id].tier)
        for target in rung_arenas(state, upper) if upper else []:
            base = state.patches[target.baseline_patch]
            if target.best is None and base.settled:
                continue  # its baseline failed: nothing climbs there
            waiting = target.best is None and waits_for_a_climber(state, target)
            queued += seeds + (max(0, seeds - len(state.seeds_planned(base, "baseline"))) if waiting else 0)
    climbs = sum(1 for t in state.transfers.values() if t.outcome is None and t.patch is None and not t.unportable)
    for winner in state.winners:  # a transfer not queued yet: its upper arena has no best so far
        source = state.patches[winner]
        upper = next_rung(state, state.arenas[source.arena].tier)
        sent = {t.to_arena for t in state.transfers.values() if t.source == winner}
        climbs += sum(1 for target in rung_arenas(state, upper) if target.id not in sent and  # a settled baseline
                      (target.best is not None or not state.patches[target.baseline_patch].settled)) if upper else 0  # and no best: failed
    return queued + climbs * seeds


def _queue(target: Arena, source: str) -> WorkQueued:
    return WorkQueued(by=SERVICE, work=new_id("w"), work_kind="transfer", arena=target.id, ref=source,
                      tier=target.tier, priority=TRANSFER_PRIORITY)  # fmt: skip


def decide_transfer(state: State, work_id: str) -> TransferDone | None:
    """The transfer's outcome once it has one: not transferable, failed, or its patch's verdict."""
    transfer = state.transfers[work_id]
    if transfer.outcome is not None:
        return None
    patch = state.patches.get(transfer.patch or "")
    if transfer.unportable:
        return _done(state, transfer, "not_transferable", transfer.reason)
    if patch is None:
        if state.work[work_id].status == "done":  # its porter finished it without a patch
            return _done(state, transfer, "failed", transfer.reason or "the porter closed the transfer without a patch")
        return None
    if patch.status == "refused":
        return _done(state, transfer, "not_transferable", f"the re-applied code was refused: {patch.reason}")
    if not patch.settled:
        return None
    outcome = _OUTCOMES.get(patch.outcome or "", "failed")
    if outcome == "held":
        return _done(state, transfer, outcome, f"promoted on {patch.arena}", patch.gain)
    best, values = state.best_values(patch.arena), patch.ok_values()
    gain = rules.mean(best) - rules.mean(values) if best and values else None
    return _done(state, transfer, outcome, f"{patch.outcome}: {patch.explanation}", gain)


def _done(state: State, transfer: Transfer, outcome: TransferOutcome, reason: str, gain_above: float | None = None) -> TransferDone:
    return TransferDone(
        by=SERVICE, work=transfer.work, source=transfer.source, from_arena=transfer.from_arena,
        to_arena=transfer.to_arena, restack=transfer.restack, patch=transfer.patch, outcome=outcome, reason=reason,
        gain_below=state.patches[transfer.source].gain, gain_above=gain_above,
    )  # fmt: skip


def plan(state: State, work_id: str) -> dict[str, Any]:
    """What a porter needs for a transfer work: the change (base -> change) and the code it goes onto.

    A transfer re-applies the winner's own change; a restack the change of the best the winner
    displaced, from the winner's parent. Both go onto the target arena's current best."""
    transfer = state.transfers[work_id]
    source = state.patches[transfer.source]
    base_id = source.parent or state.arenas[source.arena].baseline_patch
    change = state.patches[source.displaced or ""] if transfer.restack else source
    onto = state.patches[state.arenas[transfer.to_arena].best or ""]

    def code(patch: Patch) -> dict[str, str]:
        return {"id": patch.id, "code": patch.code}

    return {"source": source.id, "restack": transfer.restack, "base": code(state.patches[base_id]),
            "change": code(change), "onto": code(onto), "hypothesis": change.hypothesis}  # fmt: skip
