"""Synthetic boards for benchmarks and tests: a realistic event stream, and a million runs in bulk.

`synthetic_events` is the stream a busy arena produces (ideas, claims with heartbeats, patches,
runs), with deterministic ids and times so two calls give the same stream. `load_runs` skips the
stream and fills a projection's tables straight from DuckDB's `range()`: a million runs with their
patches, hypotheses, work and claims in seconds, for the history benchmark.

The role names of the synthetic agents are the caller's (the registry in `roles` is above this
floor); scripts/bench_bulk.py runs these as benchmarks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from blackboard.events import (
    ArenaOpened, ClaimGranted, ClaimReleased, ClaimRenewed, Event, HypothesisApproved, HypothesisProposed,
    PatchAccepted, PatchSubmitted, RunFinished, RunStarted, WorkQueued, encode,
)  # fmt: skip
from blackboard.cascade import runs_to_finish
from blackboard.projection import Projection
from blackboard.state import State
from swarm.ground.settings import BoardSettings

T0 = 1_700_000_000.0
FAILURES = ("crash", "timeout", "oom", "diverged")


def synthetic_events(cycles: int, arena: str = "tiny/cpu/000000000000", start: float = T0, tag: str = "") -> list[Event]:
    """An arena, then `cycles` ideas each proposed, approved, queued, claimed, renewed twice,
    implemented, run and released: 11 events a cycle, as the service and agents publish them.
    `tag` goes into every id, to add a stream to a board that has one already."""
    ids = iter(range(1, 1 << 62))
    clock = iter(start + i * 0.01 for i in range(1 << 62))

    def event(cls: type[Event], **fields: Any) -> Event:
        return cls(id=f"e-{tag}{next(ids)}", at=next(clock), **{"by": "service", **fields})

    code = "".join(f"KNOB_{i} = {i}  # a knob\n" for i in range(150))  # a train.py-sized patch
    out = [event(ArenaOpened, arena=arena, baseline_patch="p-base", fingerprint="f" * 64, tier="tiny", hardware="cpu",
                 baseline_code=code, baseline_hash="h-base")]  # fmt: skip
    for i in range(cycles):
        h, w, c, p, r = (f"{kind}-{tag}{i}" for kind in "hwcpr")
        agent = f"agent-{i % 8}"
        run = {"run": r, "patch": p, "arena": arena, "work": w, "seed": 0, "purpose": "explore", "tier": "tiny",
               "device": "cpu:0", "node": f"node-{i % 4}", "by": agent}  # fmt: skip
        out += [
            event(HypothesisProposed, by="ideator", hypothesis=h, arena=arena, title=f"idea {i}", intent={"knobs": {"LR": i}}),
            event(HypothesisApproved, hypothesis=h),
            event(WorkQueued, work=w, work_kind="implement", arena=arena, ref=h),
            event(ClaimGranted, claim=c, work=w, agent=agent, expires_at=start + i + 30),
            event(ClaimRenewed, claim=c, expires_at=start + i + 40),
            event(ClaimRenewed, claim=c, expires_at=start + i + 50),
            event(PatchSubmitted, by=agent, patch=p, arena=arena, hypothesis=h, work=w, code=code, diff="-a\n+b\n", code_hash=f"h-{i}"),
            event(PatchAccepted, patch=p),
            event(RunStarted, **run),
            event(RunFinished, **run, status="ok", val_bpb=1.9 - i * 1e-6, fingerprint="f" * 64, source_hash=f"s-{i}"),
            event(ClaimReleased, claim=c, done=True),
        ]  # fmt: skip
    return out


def load_runs(conn: duckdb.DuckDBPyConnection, runs: int, *, roles: Sequence[str], arenas: int = 4, agents: int = 32,
              seeds: int = 3) -> None:  # fmt: skip
    """Fill an empty projection with `runs` runs: `seeds` per patch (an explore, then replications),
    a hypothesis per patch, each patch the child of one twice as old in its arena (lineages about
    log2 deep), work and a claim per run, 1 run in 10 failed, one run every 0.5 s of history."""
    patches = -(-runs // seeds)
    conn.execute("BEGIN")
    conn.execute(
        f"""INSERT INTO agents SELECT 'agent-' || i, {_sql_list(roles)}[i % {len(roles)} + 1], 'node-' || (i % 8), 'offline',
               ['cpu:0'], 1000 + i, 'active', make_timestamp(?::BIGINT * 1000000), NULL, NULL
           FROM range(?) t(i)""",
        [int(T0), agents],
    )
    conn.execute(
        """INSERT INTO arenas SELECT 'tiny/cpu-' || i || '/000000000000', 'p-base-' || i, repeat('f', 64), 'tiny',
               'cpu-' || i, false, 'h-base-' || i, 'node-0', make_timestamp(?::BIGINT * 1000000) FROM range(?) t(i)""",
        [int(T0), arenas],
    )
    conn.execute(
        """INSERT INTO patches SELECT 'p-base-' || i, 'tiny/cpu-' || i || '/000000000000', NULL, NULL, NULL, 'node-0',
               'LR = 0.01', '', 'h-base-' || i, 'accepted', NULL, NULL, ts, ts
           FROM (SELECT i, make_timestamp(?::BIGINT * 1000000) AS ts FROM range(?) t(i))""",
        [int(T0), arenas],
    )
    # Patch i is in arena i % arenas; its parent is patch (i // 2) rounded into the same arena.
    conn.execute(
        f"""INSERT INTO hypotheses SELECT 'h-' || i, 'tiny/cpu-' || (i % {arenas}) || '/000000000000', NULL,
               'idea ' || i || ': raise knob ' || (i % 97), 'because', '{{}}', md5(i::VARCHAR), 'agent-0',
               make_timestamp(((? + i * {seeds} * 0.5) * 1000000)::BIGINT), 'approved', NULL, NULL, NULL
           FROM range(?) t(i)""",
        [T0, patches],
    )
    conn.execute(
        f"""INSERT INTO patches SELECT 'p-' || i, 'tiny/cpu-' || (i % {arenas}) || '/000000000000', 'h-' || i, NULL,
               CASE WHEN i < {arenas} THEN 'p-base-' || i ELSE 'p-' || ((i // 2) - (i // 2) % {arenas} + i % {arenas}) END,
               'agent-1', 'LR = 0.02', '-a\n+b\n', md5('code' || i), 'accepted', NULL, NULL, ts, ts
           FROM (SELECT i, make_timestamp(((? + i * {seeds} * 0.5) * 1000000)::BIGINT) AS ts FROM range(?) t(i))""",
        [T0, patches],
    )
    conn.execute(
        f"""INSERT INTO runs SELECT 'r-' || j, 'p-' || p, 'h-' || p,
               CASE WHEN p < {arenas} THEN 'p-base-' || p ELSE 'p-' || ((p // 2) - (p // 2) % {arenas} + p % {arenas}) END,
               'tiny/cpu-' || (p % {arenas}) || '/000000000000', 'w-' || j, 'agent-' || (j % {agents}),
               'node-' || (j % {agents} % 8), 'cpu:0', j % {seeds},
               CASE WHEN j % {seeds} = 0 THEN 'explore' ELSE 'replicate' END, 'tiny',
               CASE WHEN j % 10 = 7 THEN {_sql_list(FAILURES)}[(j // 10) % 4 + 1] ELSE 'ok' END,
               CASE WHEN j % 10 = 7 THEN 'boom' END,
               CASE WHEN j % 10 = 7 THEN NULL ELSE 1.9 - p * 1e-7 + ((j * 7919) % 1000) * 1e-5 END,
               300.0, 310.0, 1000000, 1000, 50000000, 900.0, 0.5, 3333.3, NULL, 600.0, 'landlock', repeat('f', 64), false,
               md5('code' || p), '',
               started, started + INTERVAL 300 SECOND, started + INTERVAL 300 SECOND
           FROM (SELECT j, j // {seeds} AS p, make_timestamp(((? + j * 0.5) * 1000000)::BIGINT) AS started
                 FROM range(?) t(j))""",
        [T0, runs],
    )
    conn.execute(
        f"""INSERT INTO work SELECT 'w-' || j, CASE WHEN j % {seeds} = 0 THEN 'implement' ELSE 'replicate' END,
               arena, CASE WHEN j % {seeds} = 0 THEN hypothesis ELSE patch END, seed, NULL, 0, 'done', NULL,
               started_at - INTERVAL 10 SECOND, finished_at, 'run_finished'
           FROM (SELECT *, CAST(substr(run, 3) AS BIGINT) AS j FROM runs)"""
    )
    conn.execute(
        """INSERT INTO claims SELECT 'c-' || substr(work, 3), work, 'agent-1', queued_at, queued_at + INTERVAL 30 SECOND,
               'released', true, closed_at, '' FROM work"""
    )
    conn.execute(
        f"""INSERT INTO bests SELECT row_number() OVER (), arena, patch, 1.9 - n * 1e-4, 0.001, {seeds}, NULL, NULL, 0.002,
               'synthetic', 'service', submitted_at
           FROM (SELECT arena, patch, submitted_at, row_number() OVER (PARTITION BY arena ORDER BY submitted_at) AS n
                 FROM patches WHERE hypothesis IS NULL OR hash(patch) % 5000 = 0)"""
    )
    conn.execute("COMMIT")
    conn.execute("CHECKPOINT")


def _sql_list(words: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{w}'" for w in words) + "]"


def measure_apply(events: list[Event], batch: int, db: Path) -> float:
    """Events per second applying `events` after the file's last sequence, as encoded bytes (as the
    service receives them), in batches of `batch`."""
    with Projection(db) as projection:
        items = [(projection.last_seq + seq, encode(event)) for seq, event in enumerate(events, 1)]
        started = time.perf_counter()
        for start in range(0, len(items), batch):
            projection.apply_many(items[start : start + batch])
        return len(items) / (time.perf_counter() - started)


def measure_budget_check(cycles: int, calls: int) -> tuple[float, float]:
    """p50 and p99, in milliseconds, of what a run budget asks on each implement grant
    (`cascade.runs_to_finish`), on a state folded from `synthetic_events(cycles)` and one open candidate."""
    events = synthetic_events(cycles)
    patch = f"p-{cycles - 1}"  # the last idea's patch, with a replication queued: a candidate
    events.append(WorkQueued(id="e-candidate", at=events[-1].at, by="service", work="w-candidate", work_kind="replicate",
                             arena="tiny/cpu/000000000000", ref=patch, seed=1))  # fmt: skip
    state = State(BoardSettings(max_runs=cycles * 2))
    for seq, event in enumerate(events, 1):
        state.apply(event, seq)
    return measure(lambda: runs_to_finish(state), calls)


def history_filters(conn: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    """The filters a person types: none, by arena, status, agent, role, the last hour."""
    newest = conn.execute("SELECT epoch(max(updated_at)) FROM runs").fetchone()[0]  # type: ignore[index]
    arena = conn.execute("SELECT arena FROM arenas ORDER BY arena LIMIT 1").fetchone()[0]  # type: ignore[index]
    return {
        "latest": {},
        "arena": {"arena": arena},
        "failed": {"status": "crash"},
        "agent": {"agent": "agent-7"},
        "role": {"role": "replicator"},
        "last hour": {"since": newest - 3600},
        "arena+status+hour": {"arena": arena, "status": "ok", "since": newest - 3600},
    }


def measure(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """p50 and p99 of `calls` calls, in milliseconds."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
