"""A small research story as a stream of events: the data the projection and query tests share."""

from __future__ import annotations

from blackboard.events import (
    AgentJoined, ArenaOpened, BestPromoted, ClaimGranted, ClaimReleased, Event, HypothesisApproved,
    HypothesisProposed, HypothesisRejected, LeaderElected, PatchAccepted, PatchRefused, PatchSubmitted,
    ReplicationDone, ReviewDone, RunFinished, RunStarted, UsageRecorded, WorkQueued,
)  # fmt: skip

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z: the story's first second
ARENA, OTHER = "tiny/cpu/abcdef012345", "standard/gpu/abcdef012345"
BASE, OTHER_BASE = "p-base", "p-base-gpu"
BASELINE_CODE = "LR = 0.01\n"


class Story:
    """Events with ids and times chosen by the test (the same on every call), one second apart, from seq 1."""

    def __init__(self) -> None:
        self.events: list[tuple[int, Event]] = []

    @property
    def now(self) -> float:
        return T0 + len(self.events)

    def add(self, cls: type[Event], **fields: object) -> Event:
        seq = len(self.events) + 1
        event = cls(id=f"e-{seq}", at=self.now, **{"by": "service", **fields})  # type: ignore[arg-type]
        self.events.append((seq, event))
        return event

    def work(self, work: str, kind: str, ref: str, agent: str, *, seed: int = 0, arena: str = ARENA) -> str:
        """Queue work and grant it to `agent`; returns the claim id."""
        self.add(WorkQueued, work=work, work_kind=kind, arena=arena, ref=ref, seed=seed)
        self.add(ClaimGranted, claim=f"c-{work}", work=work, agent=agent, expires_at=self.now + 30)
        return f"c-{work}"

    def run(self, run: str, patch: str, work: str | None, agent: str, *, seed: int, purpose: str,
            status: str = "ok", val_bpb: float | None = None, arena: str = ARENA, node: str = "n2") -> None:  # fmt: skip
        ident = {"run": run, "patch": patch, "arena": arena, "work": work, "seed": seed, "purpose": purpose,
                 "tier": arena.split("/")[0], "device": "cpu:0", "node": node, "by": agent}  # fmt: skip
        self.add(RunStarted, **ident)
        self.add(RunFinished, **ident, status=status, val_bpb=val_bpb, fingerprint="f" * 64, source_hash="s-" + patch,
                 training_seconds=60.0, total_seconds=70.0, tokens=1000, steps=10, params=100,
                 reason=None if status == "ok" else "boom")  # fmt: skip

    def baseline_promoted(self) -> None:
        """ARENA's baseline run on three seeds (1.90, 1.91, 1.92) and promoted: its first best, 1.91."""
        for seed, value in enumerate([1.90, 1.91, 1.92]):
            claim = self.work(f"w-base-{seed}", "baseline", BASE, "r1", seed=seed)
            self.run(f"r-base-{seed}", BASE, f"w-base-{seed}", "r1", seed=seed, purpose="baseline", val_bpb=value)
            self.add(ClaimReleased, claim=claim, done=True)
        self.add(BestPromoted, arena=ARENA, patch=BASE, mean=1.91, std=0.01, n=3, reason="the baseline, over 3 seeds")

    def explored(self, val_bpb: float, node: str = "n2") -> None:
        """h1 'Raise the LR' proposed on ARENA, implemented as p1 and explored: `val_bpb`."""
        self.add(HypothesisProposed, by="i1", hypothesis="h1", arena=ARENA, title="Raise the LR", intent={"knobs": {"LR": 0.02}})
        self.add(HypothesisApproved, hypothesis="h1")
        claim = self.work("w-impl-1", "implement", "h1", "m1")
        self.add(PatchSubmitted, by="m1", patch="p1", arena=ARENA, hypothesis="h1", work="w-impl-1", code="LR = 0.02\n",
                 diff="-LR = 0.01\n+LR = 0.02\n", code_hash="h-p1")  # fmt: skip
        self.add(PatchAccepted, patch="p1")
        self.run("r-p1-0", "p1", "w-impl-1", "m1", seed=0, purpose="explore", val_bpb=val_bpb, node=node)
        self.add(ClaimReleased, claim=claim, done=True)


def story() -> Story:
    """Two arenas; a baseline promoted; an idea that became the best; one that crashed; a duplicate idea
    and a duplicate patch; a queued and a claimed piece of work left open at the end."""
    s = Story()
    for agent, role, node in [("i1", "ideator", "n1"), ("m1", "implementer", "n1"), ("v1", "reviewer", "n2"),
                              ("r1", "replicator", "n2")]:  # fmt: skip
        s.add(AgentJoined, by=agent, agent=agent, role=role, node=node, devices=["cpu:0"])
    s.add(LeaderElected, instance="s1")
    for arena, base in [(ARENA, BASE), (OTHER, OTHER_BASE)]:
        s.add(ArenaOpened, by="n1", arena=arena, baseline_patch=base, fingerprint="f" * 64, tier=arena.split("/")[0],
              hardware=arena.split("/")[1], baseline_code=BASELINE_CODE, baseline_hash="h-base")  # fmt: skip
    s.baseline_promoted()
    s.explored(1.85, node="n1")
    for seed, value in [(1, 1.86), (2, 1.84)]:
        claim = s.work(f"w-rep-{seed}", "replicate", "p1", "r1", seed=seed)
        s.run(f"r-p1-{seed}", "p1", f"w-rep-{seed}", "r1", seed=seed, purpose="replicate", val_bpb=value)
    s.work("w-rev-1", "review", "p1", "v1")
    s.add(ReviewDone, by="v1", review="rv1", patch="p1", work="w-rev-1", verdict="approve", reasons=["faithful"])
    s.add(BestPromoted, arena=ARENA, patch="p1", mean=1.85, std=0.01, n=3, previous=BASE, previous_mean=1.91,
          threshold=0.02, reason="mean 1.8500 over 3 seeds beats the best's 1.9100 by 0.0600 > threshold 0.0200")  # fmt: skip

    s.add(HypothesisProposed, by="i1", hypothesis="h2", arena=ARENA, parent="p1", title="Deeper model",
          intent={"knobs": {"N_LAYER": 8}})  # fmt: skip
    s.add(HypothesisApproved, hypothesis="h2")
    claim = s.work("w-impl-2", "implement", "h2", "m1")
    s.add(PatchSubmitted, by="m1", patch="p2", arena=ARENA, hypothesis="h2", work="w-impl-2", parent="p1",
          code="LR = 0.02\nN_LAYER = 8\n", diff="+N_LAYER = 8\n", code_hash="h-p2")  # fmt: skip
    s.add(PatchAccepted, patch="p2")
    s.run("r-p2-0", "p2", "w-impl-2", "m1", seed=0, purpose="explore", status="oom", node="n1")
    s.add(ClaimReleased, claim=claim, done=True)
    s.add(ReplicationDone, patch="p2", arena=ARENA, n=0, mean=float("nan"), std=0.0, outcome="failed",
          explanation="0 ok runs of the 3 seeds a promotion needs")  # fmt: skip

    s.add(HypothesisProposed, by="i1", hypothesis="h3", arena=ARENA, title="raise the LR!", intent={"knobs": {"LR": 0.020}})
    s.add(HypothesisRejected, hypothesis="h3", reason="the same idea", duplicate_of="h1")
    s.add(HypothesisProposed, by="i1", hypothesis="h4", arena=ARENA, parent="p1", title="Warmup longer")
    s.add(HypothesisApproved, hypothesis="h4")
    s.add(PatchSubmitted, by="m1", patch="p3", arena=ARENA, hypothesis="h4", code="LR = 0.02\n", code_hash="h-p1")
    s.add(PatchRefused, patch="p3", reason="the same code was already run", duplicate_of="p1")
    s.work("w-impl-4", "implement", "h4", "m1")  # left claimed
    s.add(WorkQueued, work="w-impl-5", work_kind="implement", arena=ARENA, ref="h4")  # left queued
    s.add(UsageRecorded, by="i1", agent="i1", provider="offline", model="optimiser", input_tokens=0, output_tokens=0, cost_usd=0.0)
    return s
