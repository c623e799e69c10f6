"""Two folds, one truth: the service's decision state and the DuckDB projection read the same stream.

Random valid streams (every id names a record made earlier; a verdict only for a thing awaiting
one; a grant only of queued work...) go through both, and both must agree on the status of every
piece of work, claim, hypothesis, patch (its normalised hash included), run and verdict.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blackboard import rules
from blackboard.events import (
    ArenaOpened, BestPromoted, ClaimExpired, ClaimGranted, ClaimReleased, ClaimRenewed, Event, HypothesisApproved,
    HypothesisProposed, HypothesisRejected, PatchAccepted, PatchRefused, PatchSubmitted, Released, ReplicationDone, ReviewDone,
    RunFinished, RunLost, RunStarted, WorkCancelled, WorkQueued,
)  # fmt: skip
from blackboard.projection import Projection
from blackboard.state import State
from swarm.ground.settings import BoardSettings

CODES = ("LR = 0.01\n", "LR = 0.02\n", "LR = 0.02  # the same code, restyled\n", "N_LAYER = 8\n", "def (:\n")
AGENTS = ("a1", "a2")
STEPS = 40
_STREAMS = itertools.count()  # each example's ids start with its own tag: one projection serves them all


@dataclass
class Stream:
    """The stream drawn so far and what it made: enough to keep every next event valid."""

    tag: str
    events: list[Event] = field(default_factory=list)
    arenas: list[str] = field(default_factory=list)
    patches: dict[str, str] = field(default_factory=dict)  # patch -> arena
    hypotheses: dict[str, str] = field(default_factory=dict)  # hypothesis -> arena
    undecided: list[str] = field(default_factory=list)  # hypotheses and patches awaiting a verdict
    work: dict[str, str] = field(default_factory=dict)  # work -> queued | claimed | done
    work_ref: dict[str, tuple[str, str]] = field(default_factory=dict)  # work -> (kind, ref)
    held: dict[str, tuple[str, str]] = field(default_factory=dict)  # claim -> (work, agent)
    started: dict[str, dict[str, Any]] = field(default_factory=dict)  # run -> its identity, not finished
    finished: list[RunFinished] = field(default_factory=list)
    count: int = 0

    def new(self, prefix: str) -> str:
        self.count += 1
        return f"{self.tag}{prefix}{self.count}"

    def add(self, event: Event) -> None:
        self.events.append(event)

    def close(self, work: str | None) -> None:
        if work is not None and self.work.get(work) not in (None, "done"):
            self.work[work] = "done"
            self.held = {c: (w, a) for c, (w, a) in self.held.items() if w != work}


def step(s: Stream, data: st.DataObject) -> None:
    """Draw one more valid event onto the stream."""
    actions = ["arena"]
    if s.arenas:
        actions += ["propose", "submit", "queue", "finish", "promote"]
    if s.undecided:
        actions.append("verdict")
    if any(status == "queued" for status in s.work.values()):
        actions.append("grant")
    if any(status != "done" for status in s.work.values()):
        actions.append("cancel")
    if s.held:
        actions += ["renew", "release", "expire", "start", "review"]
    if s.started:
        actions += ["finish_started", "lose"]
    if s.finished:
        actions.append("again")
    action = data.draw(st.sampled_from(actions))
    pick = lambda options: data.draw(st.sampled_from(sorted(options)))  # noqa: E731
    if action == "arena":
        arena, base, code = s.new("arena-"), s.new("p-base-"), pick(CODES[:4])
        s.add(ArenaOpened(by="n1", arena=arena, baseline_patch=base, fingerprint="f", tier="tiny", hardware="cpu",
                          baseline_code=code, baseline_hash=rules.code_hash(code)))  # fmt: skip
        s.arenas.append(arena)
        s.patches[base] = arena
    elif action == "propose":
        hyp, arena = s.new("h"), pick(s.arenas)
        parent = data.draw(st.one_of(st.none(), st.sampled_from(sorted(p for p, a in s.patches.items() if a == arena))))
        title = pick(("more LR", "More lr!", "deeper"))  # the first two are one idea
        s.add(HypothesisProposed(by=pick(AGENTS), hypothesis=hyp, arena=arena, parent=parent, title=title))
        s.hypotheses[hyp] = arena
        s.undecided.append(hyp)
    elif action == "submit":
        patch, arena, code = s.new("p"), pick(s.arenas), pick(CODES)
        hyp = data.draw(st.one_of(st.none(), st.sampled_from(sorted(h for h, a in s.hypotheses.items() if a == arena) or [None])))
        sent = data.draw(st.sampled_from(["sender-" + patch, ""]))  # what a sender claims its hash is, not the truth
        s.add(PatchSubmitted(by=pick(AGENTS), patch=patch, arena=arena, hypothesis=hyp, code=code, code_hash=sent))
        s.patches[patch] = arena
        s.undecided.append(patch)
    elif action == "verdict":
        item = pick(s.undecided)
        s.undecided.remove(item)
        ok = data.draw(st.booleans())
        if item in s.hypotheses:
            s.add(HypothesisApproved(by="s", hypothesis=item) if ok else HypothesisRejected(by="s", hypothesis=item, reason="no"))
        else:
            s.add(PatchAccepted(by="s", patch=item) if ok else PatchRefused(by="s", patch=item, reason="no"))
    elif action == "queue":
        kind = pick(("implement", "baseline", "replicate", "review"))
        refs = s.hypotheses if kind == "implement" else s.patches
        if not refs:
            return
        ref = pick(refs)
        work = s.new("w")
        s.add(WorkQueued(by="s", work=work, work_kind=kind, arena=refs[ref], ref=ref, seed=0))  # type: ignore[arg-type]
        s.work[work], s.work_ref[work] = "queued", (kind, ref)
    elif action == "grant":
        work, claim, agent = pick(w for w, status in s.work.items() if status == "queued"), s.new("c"), pick(AGENTS)
        mine = sorted(c for c, (_, holder) in s.held.items() if holder == agent)
        releasing = None
        if mine and data.draw(st.booleans()):  # a hand-over: the grant releases one of the agent's claims first
            given = pick(mine)
            done = data.draw(st.booleans())
            releasing = Released(claim=given, done=done, reason="handed over")
            given_work, _ = s.held.pop(given)
            s.work[given_work] = "done" if done else "queued"
        s.add(ClaimGranted(by="s", claim=claim, work=work, agent=agent, expires_at=1e9 + s.count, releasing=releasing))
        s.work[work], s.held[claim] = "claimed", (work, agent)
    elif action == "cancel":
        work = pick(w for w, status in s.work.items() if status != "done")
        s.add(WorkCancelled(by="s", work=work, reason="not needed"))
        s.close(work)
    elif action == "renew":
        s.add(ClaimRenewed(by="s", claim=pick(s.held), expires_at=data.draw(st.floats(1e9, 2e9))))
    elif action in ("release", "expire"):
        claim = pick(s.held)
        work, _ = s.held.pop(claim)
        done = action == "release" and data.draw(st.booleans())
        s.add(ClaimReleased(by="s", claim=claim, done=done) if action == "release" else ClaimExpired(by="s", claim=claim))
        s.work[work] = "done" if done else "queued"
    elif action == "start":
        claim = pick(s.held)
        work, agent = s.held[claim]
        kind, ref = s.work_ref[work]
        if ref not in s.patches:
            return  # implement work: its run needs the patch the agent has not submitted
        ids = {"run": s.new("r"), "patch": ref, "arena": s.patches[ref], "work": work, "seed": 0, "purpose": "explore",
               "tier": "tiny", "device": "cpu", "node": "n1", "by": agent}  # fmt: skip
        s.add(RunStarted(**ids))
        s.started[ids["run"]] = ids
    elif action in ("finish", "finish_started"):
        if action == "finish_started":
            ids = s.started.pop(pick(s.started))
        else:  # a result whose RunStarted never came
            patch = pick(s.patches)
            ids = {"run": s.new("r"), "patch": patch, "arena": s.patches[patch], "work": None, "seed": 1,
                   "purpose": "replicate", "tier": "tiny", "device": "cpu", "node": "n1", "by": pick(AGENTS)}  # fmt: skip
        status = pick(("ok", "ok", "crash"))
        val = data.draw(st.floats(1.0, 2.0)) if status == "ok" else None
        event = RunFinished(**ids, status=status, val_bpb=val, fingerprint="f", source_hash="s")
        s.add(event)
        s.finished.append(event)
        s.close(ids["work"])
    elif action == "again":  # the same result republished under another event id
        s.add(pick_event(data, s.finished).model_copy(update={"id": s.new("e-again-")}))
    elif action == "lose":
        run = pick(s.started)
        if any(s.started[run]["work"] == w and s.started[run]["by"] == a for w, a in s.held.values()):
            return  # its holder still holds the claim: the service declares no run of it lost
        s.started.pop(run)
        s.add(RunLost(by="s", run=run, reason="its agent stopped"))
    elif action == "review":
        claim = pick(s.held)
        work, agent = s.held[claim]
        kind, ref = s.work_ref[work]
        if kind != "review":
            return
        s.add(ReviewDone(by=agent, review=s.new("v"), patch=ref, work=work, verdict=pick(("approve", "reject"))))
        s.close(work)
    elif action == "promote":
        arena = pick(s.arenas)
        patch = pick(p for p, a in s.patches.items() if a == arena)
        if data.draw(st.booleans()):
            s.add(BestPromoted(by="s", arena=arena, patch=patch, mean=1.5, std=0.0, n=3, reason="better"))
        else:
            s.add(ReplicationDone(by="s", patch=patch, arena=arena, n=3, mean=1.5, std=0.0, outcome="not_better",
                                  explanation="within the noise"))  # fmt: skip


def pick_event(data: st.DataObject, events: list[RunFinished]) -> RunFinished:
    return events[data.draw(st.integers(0, len(events) - 1))]


# --- the two folds, side by side ----------------------------------------------------------------


def from_state(state: State) -> dict[str, dict[str, Any]]:
    runs: dict[str, Any] = {run: "running" for run in state.running}
    runs |= {run: "lost" for run in state.lost if run not in state.running}
    runs |= {run.id: run.status for patch in state.patches.values() for run in patch.runs}
    return {
        "work": {w.id: (w.status, w.claim) for w in state.work.values()},
        "claims": {c.id: (c.work, c.agent) for c in state.claims.values()},
        "hypotheses": {h.id: (h.status, h.duplicate_of) for h in state.hypotheses.values()},
        "patches": {p.id: (p.status, p.code_hash) for p in state.patches.values()},
        "runs": runs,
        "bests": {a.id: a.best for a in state.arenas.values() if a.best is not None},
        "settled": {p.id for p in state.patches.values() if p.settled},
    }


def from_projection(projection: Projection, tag: str) -> dict[str, dict[str, Any]]:
    """The same, from the projection's tables: the rows of the stream tagged `tag` (see `Stream.new`)."""
    cursor = projection.cursor()

    def pairs(sql: str) -> dict[str, Any]:
        found = cursor.execute(sql).fetchall()
        return {key: value[0] if len(value) == 1 else tuple(value) for key, *value in found if key.startswith(tag)}

    try:
        return {
            "work": pairs("SELECT work, status, claim FROM work"),
            "claims": pairs("SELECT claim, work, agent FROM claims WHERE status = 'held'"),
            "hypotheses": pairs("SELECT hypothesis, status, duplicate_of FROM hypotheses"),
            "patches": pairs("SELECT patch, status, code_hash FROM patches"),
            "runs": pairs("SELECT run, status FROM runs"),
            "bests": pairs("SELECT arena, patch FROM current_bests"),
            "settled": set(pairs("SELECT patch, 1 FROM bests UNION SELECT patch, 1 FROM replications")),
        }
    finally:
        cursor.close()


@pytest.fixture(scope="module")
def shared() -> Iterator[Projection]:
    """One projection for every example (making one costs a tenth of a second): each adds its own ids."""
    with Projection(":memory:") as projection:  # type: ignore[arg-type]
        yield projection


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_state_and_the_projection_fold_any_valid_stream_to_the_same_statuses(shared: Projection, data: st.DataObject) -> None:
    stream = Stream(tag=f"s{next(_STREAMS)}-")
    for _ in range(data.draw(st.integers(1, STEPS))):
        step(stream, data)
    state = State(BoardSettings())
    for seq, event in enumerate(stream.events, 1):
        state.apply(event, seq)
    shared.apply_many(enumerate(stream.events, shared.last_seq + 1))
    folded = from_projection(shared, stream.tag)
    expected = from_state(state)
    for part in expected:
        assert folded[part] == expected[part], f"{part} differ"
