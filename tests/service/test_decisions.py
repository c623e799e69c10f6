"""The service's decisions, from the facts agents publish: the life of a hypothesis, end to end."""

from __future__ import annotations

import asyncio
import time

import pytest

from blackboard.client import Board, Claim
from blackboard.events import (
    BestPromoted, ClaimGranted, PatchSubmitted, ReplicationDone, ReviewDone, RunFinished, WorkCancelled, decode,
    encode, new_id,
)  # fmt: skip
from blackboard.rules import code_hash
from blackboard.service import Service
from swarm.ground.bus import Bus
from tests.service.conftest import ARENA, BASELINE, hypothesis, open_arena


async def finish(board: Board, claim: Claim, val_bpb: float | None, patch: str | None = None, status: str = "ok") -> None:
    patch_id = patch or (claim.patch or {}).get("id") or claim.ref
    await board.publish(RunFinished(
        by=board.agent, run=new_id("r"), patch=patch_id, arena=claim.arena, work=claim.work, seed=claim.seed or 0,
        purpose={"baseline": "baseline", "replicate": "replicate", "implement": "explore"}[claim.kind],  # type: ignore[arg-type]
        tier="tiny", device="cpu", node="n1", status=status, val_bpb=val_bpb, fingerprint="f" * 64, source_hash="x",  # type: ignore[arg-type]
    ))  # fmt: skip


async def establish_baseline(board: Board, values: tuple[float, ...] = (2.00, 2.01, 1.99)) -> None:
    await open_arena(board)
    for value in values:
        claim = await board.claim(["baseline"], [ARENA], wait=10)
        assert claim is not None and claim.kind == "baseline"
        await finish(board, claim, value)


async def decisions(bus: Bus, kind: type) -> list:
    return [event for _, message in await bus.stored() if isinstance(event := decode(message.data), kind)]


async def wait_for(predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def implement(board: Board, code: str, title: str, **knobs: object) -> tuple[Claim, PatchSubmitted]:
    verdict = await board.propose(hypothesis(title, **knobs))
    assert verdict.ok, verdict
    claim = await Board(board.bus, agent=new_id("implementer")).claim(["implement"], [ARENA], wait=10)
    assert claim is not None and claim.hypothesis is not None and claim.hypothesis["title"] == title
    assert claim.parent is not None and claim.parent["code"] == BASELINE  # it builds on the baseline
    patch = PatchSubmitted(by=board.agent, patch=new_id("p"), arena=ARENA, hypothesis=claim.ref, work=claim.work,
                           parent=claim.parent["id"], code=code, code_hash=code_hash(code))  # fmt: skip
    return claim, patch


async def test_the_baseline_is_run_over_k_seeds_and_becomes_the_first_best(bus: Bus, board: Board, service: Service) -> None:
    await establish_baseline(board)
    await wait_for(lambda: service.state.arenas[ARENA].best is not None)
    best = await board.best(ARENA)
    assert best is not None and best["code"] == BASELINE and best["mean"] == pytest.approx(2.0)
    assert sorted(best["values"]) == [1.99, 2.00, 2.01]


async def test_a_duplicate_idea_is_refused_with_a_pointer_to_the_first(board: Board, service: Service) -> None:
    await open_arena(board)
    first = hypothesis("Double the learning rate", LR=0.02)
    assert (await board.propose(first)).ok
    again = hypothesis("  double the LEARNING rate! ", LR=0.020)
    verdict = await board.propose(again)
    assert verdict.status == "rejected" and verdict.duplicate_of == first.hypothesis
    assert first.hypothesis in verdict.reason


async def test_a_patch_with_code_already_run_is_refused_and_its_twin_accepted(board: Board, service: Service) -> None:
    await open_arena(board)
    same_as_baseline = "# reformatted, same program\nLR = 0.01\n"
    claim, patch = await implement(board, same_as_baseline, "a no-op", LR=0.01)
    verdict = await board.submit(patch)
    assert verdict.status == "refused" and verdict.duplicate_of is not None and "already" in verdict.reason
    _, other = await implement(board, "LR = 0.02\n", "a real change", LR=0.02)
    assert (await board.submit(other)).status == "accepted"
    _, twin = await implement(board, "LR = 0.02  # same code, other comment\n", "same change again", LR=0.020001)
    refused = await board.submit(twin)
    assert refused.status == "refused" and refused.duplicate_of == other.patch


async def test_a_candidate_is_replicated_reviewed_and_promoted_with_its_reason(bus: Bus, board: Board, service: Service) -> None:
    await establish_baseline(board)
    claim, patch = await implement(board, "LR = 0.03\n", "raise the learning rate", LR=0.03)
    assert (await board.submit(patch)).ok
    await finish(board, claim, 1.80, patch=patch.patch)
    seeds = []
    for _ in range(2):
        rep = await board.claim(["replicate"], [ARENA], wait=10)
        assert rep is not None and rep.patch is not None and rep.patch["code"] == "LR = 0.03\n"
        seeds.append(rep.seed)
        await finish(board, rep, 1.81)
    assert sorted(seeds) == [1, 2]  # seed 0 was the explore run
    review = await board.claim(["review"], [ARENA], wait=10)
    assert review is not None and review.ref == patch.patch
    await board.publish(ReviewDone(by="reviewer", review=new_id("v"), patch=patch.patch, work=review.work, verdict="approve"))
    await wait_for(lambda: service.state.arenas[ARENA].best == patch.patch)
    promoted = [e for e in await decisions(bus, BestPromoted) if e.patch == patch.patch]
    assert len(promoted) == 1 and promoted[0].previous is not None and promoted[0].threshold is not None
    assert "beats" in promoted[0].reason


async def test_a_result_within_the_noise_is_not_promoted_and_says_why(bus: Bus, board: Board, service: Service) -> None:
    await establish_baseline(board, (2.00, 2.05, 1.95))  # a noisy arena: spread 0.05
    claim, patch = await implement(board, "LR = 0.011\n", "nudge the learning rate", LR=0.011)
    assert (await board.submit(patch)).ok
    await finish(board, claim, 1.97, patch=patch.patch)  # better than 2.00 by more than min_delta: a candidate
    for value in (1.93, 1.99):  # never hopeless on the way (see the futility test below)
        rep = await board.claim(["replicate"], [ARENA], wait=10)
        assert rep is not None
        await finish(board, rep, value)
    review = await board.claim(["review"], [ARENA], wait=10)
    assert review is not None
    await board.publish(ReviewDone(by="reviewer", review=new_id("v"), patch=patch.patch, work=review.work, verdict="approve"))
    await wait_for(lambda: service.state.patches[patch.patch].settled)
    [done] = [e for e in await decisions(bus, ReplicationDone) if e.patch == patch.patch]
    assert done.outcome == "not_better" and "threshold" in done.explanation
    assert service.state.arenas[ARENA].best != patch.patch


async def test_a_hopeless_candidate_is_decided_without_its_last_seed(bus: Bus, board: Board, service: Service) -> None:
    await establish_baseline(board)  # spread 0.01: a promotion needs a mean below 1.98
    claim, patch = await implement(board, "LR = 0.012\n", "nudge the learning rate", LR=0.012)
    assert (await board.submit(patch)).ok
    await finish(board, claim, 1.99, patch=patch.patch)  # a candidate
    rep = await board.claim(["replicate"], [ARENA], wait=10)
    assert rep is not None
    await finish(board, rep, 2.03)  # the last seed would need about 1.87, over 6 predicted spreads below the mean 2.01
    assert await board.claim(["replicate"], [ARENA], wait=1) is None  # its seed is nobody's run
    await wait_for(lambda: service.state.patches[patch.patch].settled)
    [done] = [e for e in await decisions(bus, ReplicationDone) if e.patch == patch.patch]
    assert done.outcome == "not_better" and done.n == 2 and done.explanation.startswith("stopped after 2 of 3 seeds")
    cancelled = {e.work for e in await decisions(bus, WorkCancelled) if "hopeless" in e.reason}
    assert "replicate" in {service.state.work[w].kind for w in cancelled}  # and the review, if it was queued yet
    assert all(w.status == "done" for w in service.state.work.values() if w.ref == patch.patch), "nothing left to do"
    assert len(service.state.patches[patch.patch].runs) == 2


async def test_a_candidate_rejected_in_review_has_its_queued_replications_cancelled(
    bus: Bus, board: Board, service: Service
) -> None:
    await establish_baseline(board)
    claim, patch = await implement(board, "LR = 0.5\n", "suspiciously good", LR=0.5)
    assert (await board.submit(patch)).ok
    await finish(board, claim, 1.0, patch=patch.patch)
    review = await board.claim(["review"], [ARENA], wait=10)  # a reviewer gets there before any replicator
    assert review is not None
    await board.publish(ReviewDone(by="reviewer", review=new_id("v"), patch=patch.patch, work=review.work,
                                   verdict="reject", reasons=["reads the validation data"]))  # fmt: skip
    await wait_for(lambda: service.state.patches[patch.patch].settled)
    cancelled = await decisions(bus, WorkCancelled)
    assert len(cancelled) == 2 and all("rejected in review" in c.reason for c in cancelled)
    assert await board.claim(["replicate"], [ARENA], wait=0.5) is None
    [done] = [e for e in await decisions(bus, ReplicationDone) if e.patch == patch.patch]
    assert done.outcome == "rejected_in_review"


async def test_a_decision_forged_on_a_fact_subject_is_parked_and_changes_nothing(
    bus: Bus, board: Board, service: Service
) -> None:
    await open_arena(board)
    assert (await board.propose(hypothesis("an idea worth stealing", LR=0.3))).ok
    await wait_for(lambda: any(w.kind == "implement" for w in service.state.work.values()))  # queued after approval
    [work] = [w for w in service.state.work.values() if w.kind == "implement"]
    forged = ClaimGranted(by="intruder", claim="c-forged", work=work.id, agent="intruder", expires_at=time.time() + 999)
    seq = (await bus.js.publish("swarm.ev.claim_granted", encode(forged))).seq
    await wait_for(lambda: service.seen_seq >= seq)
    assert work.status == "queued" and "c-forged" not in service.state.claims
    parked = (await board.query("SELECT seq, error FROM parked"))["rows"]
    assert parked == [[seq, "a claim_granted arrived on swarm.ev.claim_granted, but it belongs on swarm.dec.claim_granted"]]
    assert (await board.claim(["implement"], [ARENA], wait=5)) is not None  # the real work is still there


async def test_an_idea_on_the_baseline_is_the_same_idea_whether_its_parent_is_named_or_not(
    board: Board, service: Service
) -> None:
    baseline = await open_arena(board)
    implied = hypothesis("lower the learning rate", LR=0.005)
    named = hypothesis("lower the learning rate", parent=baseline, LR=0.005)
    assert (await board.propose(implied)).ok
    verdict = await board.propose(named)
    assert verdict.status == "rejected" and verdict.duplicate_of == implied.hypothesis
    keys = (await board.query("SELECT DISTINCT idea_key FROM hypotheses"))["rows"]
    assert len(keys) == 1, "the projection must key both the same way as the service"
