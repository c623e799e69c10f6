"""The DuckDB projection: schema, idempotent batches, the life of work and claims, lineage, rebuilds."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import msgpack
import pytest
from storyline import ARENA, BASE, T0, story
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blackboard import fold, schema
from blackboard.bulk import synthetic_events
from blackboard.events import (
    KINDS, AgentJoined, AgentLeft, ClaimExpired, ClaimGranted, ClaimReleased, ClaimRenewed, Event,
    HypothesisApproved, HypothesisProposed, PatchRefused, PatchSubmitted, ReviewDone, RunFinished, RunStarted,
    WorkCancelled, WorkQueued, encode,
)  # fmt: skip
from blackboard.projection import Projection
from swarm.ground.constants import SCHEMA_VERSION


def rows(p: Projection, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    cursor = p.cursor()
    try:
        return cursor.execute(sql, list(params)).fetchall()
    finally:
        cursor.close()


def one(p: Projection, sql: str, *params: Any) -> Any:
    [(value,)] = rows(p, sql, *params)
    return value


def table_contents(p: Projection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: rows(p, f"SELECT * FROM {table} ORDER BY ALL") for table in schema.TABLES}


def applied(p: Projection, *events: Event) -> Projection:
    p.apply_many((p.last_seq + i, event) for i, event in enumerate(events, 1))
    return p


def queued(work: str = "w1") -> WorkQueued:
    return WorkQueued(by="s", at=T0, work=work, work_kind="implement", arena=ARENA, ref="h1")


def granted(claim: str = "c1", work: str = "w1") -> ClaimGranted:
    return ClaimGranted(by="s", at=T0 + 1, claim=claim, work=work, agent="m1", expires_at=T0 + 31)


def finished(run: str = "r1", patch: str = "p1", work: str | None = "w1", **kw: Any) -> RunFinished:
    fields = {"by": "m1", "at": T0 + 5, "run": run, "patch": patch, "arena": ARENA, "work": work, "seed": 0,
              "purpose": "explore", "tier": "tiny", "device": "cpu", "node": "n1", "status": "ok", "val_bpb": 1.8,
              "fingerprint": "f", "source_hash": "h"}  # fmt: skip
    return RunFinished(**(fields | kw))


def work_row(p: Projection, work: str = "w1") -> tuple[str, str | None]:
    [(status, claim)] = rows(p, "SELECT status, claim FROM work WHERE work = ?", work)
    return status, claim


def claim_row(p: Projection, claim: str = "c1") -> tuple[Any, ...]:
    [row] = rows(p, "SELECT status, done, reason FROM claims WHERE claim = ?", claim)
    return row


# --- the file -----------------------------------------------------------------------------------


def test_the_schema_is_created_once_and_reopening_keeps_the_data(tmp_path: Path) -> None:
    with Projection(tmp_path / "b.duckdb") as p:
        p.apply_many(story().events)
        before, last = table_contents(p), p.last_seq
    with Projection(tmp_path / "b.duckdb") as p:
        assert p.last_seq == last == len(story().events)
        assert table_contents(p) == before
        assert one(p, "SELECT count(*) FROM meta") == 1


def test_a_file_made_by_another_schema_version_is_dropped_for_a_rebuild(tmp_path: Path) -> None:
    with Projection(tmp_path / "b.duckdb") as p:
        p.apply_many(story().events)
        p.conn.execute("UPDATE meta SET schema_version = schema_version + 1")
    with Projection(tmp_path / "b.duckdb") as p:
        assert p.last_seq == 0 and one(p, "SELECT count(*) FROM events") == 0
        assert one(p, "SELECT schema_version FROM meta") == schema.PROJECTION_VERSION


def test_every_event_kind_has_a_handler() -> None:
    assert set(fold.HANDLERS) == set(KINDS)


# --- applying -----------------------------------------------------------------------------------


def test_applying_is_idempotent_by_stream_sequence(told: Projection) -> None:
    before = table_contents(told)
    assert told.apply_many(story().events) == 0
    assert told.apply(queued("w-new"), 3) is False
    assert table_contents(told) == before
    assert told.apply(queued("w-new"), told.last_seq + 5) is True
    assert told.last_seq == len(story().events) + 5


def test_raw_bytes_are_decoded_and_what_does_not_decode_is_parked(projection: Projection) -> None:
    huge = encode(queued()).replace(b"implement", b"implement" + b"x" * 600_000)
    bad = msgpack.packb({"kind": "work_queued", "v": SCHEMA_VERSION, "by": "s"})
    listed = msgpack.packb({"kind": ["work_queued"], "v": SCHEMA_VERSION})
    applied_count = projection.apply_many(
        [(1, encode(queued())), (2, b"\xc1 not msgpack"), (3, bad), (4, huge), (5, listed), (6, encode(granted()))]
    )
    assert applied_count == 6 and projection.last_seq == 6
    assert [seq for (seq,) in rows(projection, "SELECT seq FROM events ORDER BY seq")] == [1, 6]
    parked = rows(projection, "SELECT seq, error, raw FROM parked ORDER BY seq")
    assert [(seq, raw) for seq, _, raw in parked] == [(2, b"\xc1 not msgpack"), (3, bad), (4, huge), (5, listed)]
    assert "not a msgpack record" in parked[0][1] and "malformed work_queued" in parked[1][1]
    assert "over the" in parked[2][1]
    assert work_row(projection) == ("claimed", "c1")


def test_the_events_table_holds_every_event_raw(told: Projection) -> None:
    seq, kind, at, by, payload = rows(told, "SELECT seq, kind, happened_at, published_by, payload FROM events WHERE seq = 1")[0]
    first = story().events[0][1]
    assert (seq, kind, by) == (1, "agent_joined", "i1")
    assert at == fold.timestamp(T0) and payload == fold.to_json(first.model_dump())


# --- work and claims ----------------------------------------------------------------------------


def test_work_is_queued_claimed_returned_and_closed_by_its_claims(projection: Projection) -> None:
    applied(projection, queued(), granted())
    assert work_row(projection) == ("claimed", "c1")
    applied(projection, ClaimRenewed(by="s", at=T0 + 2, claim="c1", expires_at=T0 + 60))
    assert one(projection, "SELECT expires_at FROM claims") == fold.timestamp(T0 + 60)
    applied(projection, ClaimExpired(by="s", at=T0 + 70, claim="c1"))
    assert work_row(projection) == ("queued", None) and claim_row(projection)[0] == "expired"
    applied(projection, granted("c2"), ClaimReleased(by="s", at=T0 + 80, claim="c2", done=False, reason="drain"))
    assert work_row(projection) == ("queued", None) and claim_row(projection, "c2") == ("released", False, "drain")
    applied(projection, granted("c3"), ClaimReleased(by="s", at=T0 + 90, claim="c3", done=True))
    assert work_row(projection) == ("done", None) and claim_row(projection, "c3") == ("released", True, "")
    assert rows(projection, "SELECT closed_at, closed_by FROM work") == [(fold.timestamp(T0 + 90), "claim_released")]


@pytest.mark.parametrize(
    "closer",
    [
        finished(),
        ReviewDone(by="v1", at=T0 + 5, review="rv", patch="p1", work="w1", verdict="reject"),
        WorkCancelled(by="s", at=T0 + 5, work="w1", reason="rejected in review"),
    ],
    ids=lambda e: e.kind,
)
def test_a_fact_naming_work_closes_it_and_ends_its_claim(projection: Projection, closer: Event) -> None:
    applied(projection, queued(), granted(), closer)
    assert work_row(projection) == ("done", None)
    assert claim_row(projection) == ("released", True, f"its work was closed by {closer.kind}")
    # The holder's own release afterwards, and a late expiry, change nothing.
    before = table_contents(projection)
    applied(projection, ClaimReleased(by="s", at=T0 + 9, claim="c1", done=False), ClaimExpired(by="s", claim="c1"))
    assert {t: r for t, r in table_contents(projection).items() if t not in ("events", "meta")} == {
        t: r for t, r in before.items() if t not in ("events", "meta")
    }


def test_a_refused_patch_does_not_close_its_work(projection: Projection) -> None:
    applied(projection, queued(), granted(), PatchRefused(by="s", patch="p1", reason="duplicate", duplicate_of="p0"))
    assert work_row(projection) == ("claimed", "c1")


def test_done_work_stays_done_and_is_not_granted(projection: Projection) -> None:
    applied(projection, queued(), finished(), granted("c9"), queued())
    assert work_row(projection) == ("done", None)
    assert rows(projection, "SELECT * FROM claims") == []


def test_events_about_unknown_or_ended_things_change_nothing_and_do_not_fail(projection: Projection) -> None:
    applied(
        projection,
        ClaimRenewed(by="s", claim="c-unknown", expires_at=T0),
        ClaimReleased(by="s", claim="c-unknown", done=True),
        ClaimGranted(by="s", claim="c-x", work="w-unknown", agent="m1", expires_at=T0),
        HypothesisApproved(by="s", hypothesis="h-unknown"),
        PatchRefused(by="s", patch="p-unknown", reason="x"),
        AgentLeft(by="a9", agent="a9"),
        queued(), granted(), ClaimExpired(by="s", at=T0 + 40, claim="c1"),
        ClaimRenewed(by="s", at=T0 + 41, claim="c1", expires_at=T0 + 99),  # after its expiry
    )  # fmt: skip
    assert one(projection, "SELECT count(*) FROM claims") == 1
    assert rows(projection, "SELECT status, expires_at FROM claims") == [("expired", fold.timestamp(T0 + 31))]
    assert one(projection, "SELECT count(*) FROM hypotheses") == 0
    assert rows(projection, "SELECT agent, status FROM agents") == [("a9", "left")]


def test_a_verdict_applies_once_to_a_thing_waiting_for_one(projection: Projection) -> None:
    applied(
        projection,
        HypothesisProposed(by="i1", hypothesis="h1", arena=ARENA, title="t"),
        HypothesisApproved(by="s", at=T0 + 1, hypothesis="h1"),
        HypothesisProposed(by="i1", hypothesis="h1", arena=ARENA, title="retried, other title"),
    )
    assert rows(projection, "SELECT title, status, decided_at FROM hypotheses") == [("t", "approved", fold.timestamp(T0 + 1))]


# --- runs and lineage ---------------------------------------------------------------------------


def test_a_run_finished_without_its_start_and_a_late_start_make_one_row(projection: Projection) -> None:
    start = RunStarted(**finished().model_dump(include=set(RunStarted.model_fields) - {"kind", "id"}) | {"at": T0 + 1})
    applied(projection, finished(), start)
    [(status, started, done, updated)] = rows(projection, "SELECT status, started_at, finished_at, updated_at FROM runs")
    assert status == "ok" and started == fold.timestamp(T0 + 1) and done == updated == fold.timestamp(T0 + 5)


@pytest.mark.parametrize("patch_first", [True, False])
@pytest.mark.parametrize("same_batch", [True, False])
def test_every_run_carries_its_patch_hypothesis_and_parent_whatever_the_order(
    projection: Projection, patch_first: bool, same_batch: bool
) -> None:
    patch = PatchSubmitted(by="m1", patch="p1", arena=ARENA, hypothesis="h1", parent="p0", code="x", code_hash="h")
    events = [patch, finished(work=None)] if patch_first else [finished(work=None), patch]
    if same_batch:
        applied(projection, *events)
    else:
        for event in events:
            applied(projection, event)
    assert rows(projection, "SELECT patch, hypothesis, parent FROM runs") == [("p1", "h1", "p0")]


def test_lineage_walks_from_a_run_back_to_the_baseline_in_sql(told: Projection) -> None:
    chain = rows(
        told,
        """WITH RECURSIVE chain(patch, depth) AS (
               SELECT patch, 0 FROM runs WHERE run = 'r-p2-0'
               UNION ALL SELECT p.parent, depth + 1 FROM chain JOIN patches p USING (patch) WHERE p.parent IS NOT NULL)
           SELECT patch FROM chain ORDER BY depth""",
    )
    assert [p for (p,) in chain] == ["p2", "p1", BASE]  # p1 named no parent: the arena's baseline
    assert one(told, "SELECT hypothesis FROM patches WHERE patch = 'p2'") == "h2"


def test_the_story_projects_to_the_expected_rows(told: Projection) -> None:
    assert rows(told, "SELECT status, count(*) FROM work GROUP BY ALL ORDER BY ALL") == [("claimed", 1), ("done", 8), ("queued", 1)]
    assert rows(told, "SELECT hypothesis, status, duplicate_of FROM hypotheses ORDER BY ALL") == [
        ("h1", "approved", None), ("h2", "approved", None), ("h3", "rejected", "h1"), ("h4", "approved", None),
    ]  # fmt: skip
    assert rows(told, "SELECT patch, status FROM patches ORDER BY ALL") == [
        ("p-base", "accepted"), ("p-base-gpu", "accepted"), ("p1", "accepted"), ("p2", "accepted"), ("p3", "refused"),
    ]  # fmt: skip
    assert rows(told, "SELECT arena, patch FROM current_bests") == [(ARENA, "p1")]
    assert one(told, "SELECT count(*) FROM bests") == 2
    assert rows(told, "SELECT outcome, mean FROM replications") == [("failed", None)]  # NaN is stored as NULL
    assert rows(told, "SELECT purpose, status, count(*) FROM runs GROUP BY ALL ORDER BY ALL") == [
        ("baseline", "ok", 3), ("explore", "ok", 1), ("explore", "oom", 1), ("replicate", "ok", 2),
    ]  # fmt: skip
    assert one(told, "SELECT count(*) FROM usage") == 1 and one(told, "SELECT instance FROM leaders") == "s1"


# --- hostile values, batches, rebuilds ---------------------------------------------------------


def test_values_a_column_cannot_hold_are_stored_as_null_not_a_failed_batch(projection: Projection) -> None:
    applied(
        projection,
        AgentJoined(by="a", at=T0, agent="a", role="r", node="n", pid=2**64 - 1),
        HypothesisProposed(by="i", at=T0, hypothesis="h", arena=ARENA, title="t", intent={"b": b"\xff", "x": math.nan}),
        finished(val_bpb=math.nan, seed=2**64 - 1, tokens=-(2**63) - 1),
    )  # (a time that is not finite never gets this far: decoding refuses it)
    assert rows(projection, "SELECT pid FROM agents") == [(None,)]
    assert rows(projection, "SELECT intent FROM hypotheses") == [('{"b":"_w==","x":null}',)]
    assert rows(projection, "SELECT val_bpb, seed, tokens FROM runs") == [(None, None, None)]


_ids = {name: st.sampled_from([f"{name}{i}" for i in range(3)]) for name in ("w", "c", "h", "p", "r", "a")}
_at = st.floats(T0, T0 + 100)
_events = st.one_of(
    st.builds(WorkQueued, by=st.just("s"), at=_at, work=_ids["w"], work_kind=st.just("replicate"), arena=st.just(ARENA), ref=_ids["p"]),
    st.builds(WorkCancelled, by=st.just("s"), at=_at, work=_ids["w"], reason=st.just("x")),
    st.builds(ClaimGranted, by=st.just("s"), at=_at, claim=_ids["c"], work=_ids["w"], agent=_ids["a"], expires_at=_at),
    st.builds(ClaimRenewed, by=st.just("s"), at=_at, claim=_ids["c"], expires_at=_at),
    st.builds(ClaimReleased, by=st.just("s"), at=_at, claim=_ids["c"], done=st.booleans()),
    st.builds(ClaimExpired, by=st.just("s"), at=_at, claim=_ids["c"]),
    st.builds(HypothesisProposed, by=_ids["a"], at=_at, hypothesis=_ids["h"], arena=st.just(ARENA), title=st.text(max_size=5)),
    st.builds(HypothesisApproved, by=st.just("s"), at=_at, hypothesis=_ids["h"]),
    st.builds(PatchSubmitted, by=_ids["a"], at=_at, patch=_ids["p"], arena=st.just(ARENA), hypothesis=_ids["h"], code=st.just("x"), code_hash=st.just("h")),
    st.builds(PatchRefused, by=st.just("s"), at=_at, patch=_ids["p"], reason=st.just("dup")),
    st.builds(RunStarted, by=_ids["a"], at=_at, run=_ids["r"], patch=_ids["p"], arena=st.just(ARENA), work=_ids["w"], seed=st.integers(0, 3), purpose=st.just("replicate"), tier=st.just("tiny"), device=st.just("cpu"), node=st.just("n")),
    st.builds(finished, run=_ids["r"], patch=_ids["p"], work=st.one_of(st.none(), _ids["w"]), val_bpb=st.floats(1, 2), at=_at),
    st.builds(ReviewDone, by=_ids["a"], at=_at, review=st.just("v"), patch=_ids["p"], work=_ids["w"], verdict=st.just("approve")),
    st.builds(AgentJoined, by=_ids["a"], at=_at, agent=_ids["a"], role=st.just("r"), node=st.just("n")),
    st.builds(AgentLeft, by=_ids["a"], at=_at, agent=_ids["a"]),
)  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_events, max_size=30), st.data())
def test_the_tables_depend_on_the_stream_order_only_not_on_how_it_is_batched(events: list[Event], data: st.DataObject) -> None:
    items = list(enumerate(events, 1))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(items) - 1)), max_size=6)))
    with tempfile.TemporaryDirectory() as tmp:
        whole, split, single = (Projection(Path(tmp) / f"{name}.duckdb") for name in ("whole", "split", "single"))
        try:
            whole.apply_many(items)
            for start, end in zip([0, *cuts], [*cuts, len(items)]):
                split.apply_many(items[start:end])
            for item in items:
                single.apply_many([item])
            assert whole.differences(split) == []
            assert whole.differences(single) == []
        finally:
            for p in (whole, split, single):
                p.close()


def test_a_rebuild_equals_the_projection_applied_incrementally(told: Projection, tmp_path: Path) -> None:
    with Projection(tmp_path / "rebuilt.duckdb") as rebuilt:
        rebuilt.apply_many([(1, queued("w-stale"))])  # whatever was there goes
        rebuilt.rebuild(story().events)
        assert rebuilt.differences(told) == []
        assert rebuilt.last_seq == told.last_seq


def test_differences_name_the_table_and_row_that_differ(told: Projection, tmp_path: Path) -> None:
    with Projection(tmp_path / "other.duckdb") as other:
        other.rebuild(story().events)
        other.conn.execute("UPDATE runs SET val_bpb = 1.0 WHERE run = 'r-p1-0'")
        other.conn.execute("DELETE FROM usage")
        found = told.differences(other)
    assert [line.split(":")[0] for line in found] == ["runs", "usage"]
    assert "1.85" in found[0] and "1.0" in found[0] and "more" in found[1]


def test_a_failing_batch_leaves_the_file_as_it_was(told: Projection, monkeypatch: pytest.MonkeyPatch) -> None:
    before, last = table_contents(told), told.last_seq

    def broken(table: str, rows: list[fold.Row]) -> None:
        raise duckdb.IOException("disk gone")

    monkeypatch.setattr(told, "_update", broken)  # after the events and new rows were appended
    with pytest.raises(duckdb.IOException):
        told.apply_many([(last + 1, queued("w-new")), (last + 2, granted("c-new", "w-impl-5"))])
    assert told.last_seq == last and table_contents(told) == before


def test_readers_in_threads_see_whole_batches_while_batches_are_applied(projection: Projection) -> None:
    torn: list[tuple[int, int]] = []
    stop = threading.Event()

    def read() -> None:
        cursor = projection.cursor()
        try:
            while not stop.is_set():
                seen = cursor.execute("SELECT (SELECT count(*) FROM events), (SELECT last_seq FROM meta)").fetchone()
                if seen is not None and seen[0] != seen[1]:
                    torn.append(seen)
        finally:
            cursor.close()

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for batch in range(40):
            projection.apply_many((batch * 10 + i, queued(f"w-{batch}-{i}")) for i in range(1, 11))
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert torn == [] and one(projection, "SELECT count(*) FROM work") == 400


_KILLED_APPLIER = """
import sys
from pathlib import Path
from blackboard.bulk import synthetic_events
from blackboard.events import encode
from blackboard.projection import Projection
from swarm.ground.constants import SCHEMA_VERSION
items = [(seq, encode(e)) for seq, e in enumerate(synthetic_events(int(sys.argv[2])), 1)]
projection = Projection(Path(sys.argv[1]))
for start in range(0, len(items), 50):
    projection.apply_many(items[start : start + 50])
    print(start // 50, flush=True)
"""


def test_a_process_killed_mid_batch_leaves_whole_batches_and_catches_up_to_a_rebuild(tmp_path: Path) -> None:
    events = synthetic_events(400)
    db = tmp_path / "killed.duckdb"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_APPLIER, str(db), "400"], stdout=subprocess.PIPE, text=True)
    try:
        while int(child.stdout.readline()) < 10:  # type: ignore[union-attr]
            pass
        time.sleep(random.uniform(0.0, 0.05))  # most of the child's time is inside a transaction
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    with Projection(db) as killed, Projection(tmp_path / "rebuilt.duckdb") as rebuilt:
        last = killed.last_seq
        assert 0 < last < len(events) and last % 50 == 0, "a batch was cut in two"
        assert one(killed, "SELECT count(*) FROM events") == last
        rebuilt.rebuild(enumerate(events[:last], 1))
        assert killed.differences(rebuilt) == []
        killed.apply_many((seq, encode(e)) for seq, e in enumerate(events, 1))  # catch up, from the start
        rebuilt.apply_many(enumerate(events, 1))
        assert killed.last_seq == len(events) and killed.differences(rebuilt) == []


_msgpack_ints = st.integers(-(2**63), 2**64 - 1)  # what msgpack carries
_values = st.one_of(
    st.none(), st.booleans(), _msgpack_ints, st.floats(), st.text(max_size=20), st.binary(max_size=20),
    st.lists(_msgpack_ints, max_size=3), st.dictionaries(st.text(max_size=5), _msgpack_ints, max_size=3),
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(story().events) - 1), st.dictionaries(st.sampled_from(
    ["kind", "v", "id", "at", "by", "work", "claim", "run", "patch", "seed", "val_bpb", "intent", "expires_at", "done",
     "status", "arena", "hypothesis", "title", "devices", "pid", "n", "mean"]), _values, max_size=4),
    st.booleans(), st.binary(max_size=40)), max_size=25))  # fmt: skip
def test_hostile_input_is_applied_or_parked_and_never_fails_a_batch(mutations: list[Any]) -> None:
    """Real events with fields dropped or replaced by anything msgpack carries, and random bytes."""
    originals = story().events
    items: list[tuple[int, bytes]] = []
    for seq, (index, changes, garbage, noise) in enumerate(mutations, 1):
        record = originals[index][1].model_dump() | changes
        items.append((seq, noise if garbage else msgpack.packb(record, use_bin_type=True)))
    with tempfile.TemporaryDirectory() as tmp, Projection(Path(tmp) / "b.duckdb") as p:
        assert p.apply_many(items) == len(items)
        assert one(p, "SELECT count(*) FROM events") + one(p, "SELECT count(*) FROM parked") == len(items)
