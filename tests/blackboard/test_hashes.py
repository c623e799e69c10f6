"""Two hashes, two names: a run's source_hash is of the raw code it ran, a patch's code_hash of its normalised code."""

from __future__ import annotations

import hashlib
from typing import Any

from storyline import ARENA, BASE, T0

from blackboard import rules
from blackboard.events import ArenaOpened, PatchSubmitted, RunFinished
from blackboard.projection import Projection
from harness import runner

BASELINE = "LR = 0.01\n"
RAW = '"""A patch."""\nLR = 0.02  # higher\n'  # comments and a docstring: raw and normalised hashes differ


def columns(projection: Projection, table: str) -> set[str]:
    cursor = projection.cursor()
    try:
        return set(cursor.table(table).columns)
    finally:
        cursor.close()


def test_a_patchs_runs_join_on_the_patch_and_each_hash_says_what_it_hashes(projection: Projection) -> None:
    ids: dict[str, Any] = {"arena": ARENA, "seed": 0, "purpose": "explore", "tier": "tiny", "device": "cpu", "node": "n1"}
    projection.apply_many(enumerate([
        ArenaOpened(by="n1", at=T0, arena=ARENA, baseline_patch=BASE, fingerprint="f" * 64, tier="tiny", hardware="cpu",
                    baseline_code=BASELINE, baseline_hash=rules.code_hash(BASELINE)),
        PatchSubmitted(by="m1", at=T0 + 1, patch="p1", arena=ARENA, code=RAW, code_hash=rules.code_hash(RAW)),
        *(RunFinished(by="m1", at=T0 + 2 + seed, run=f"r{seed}", patch="p1", **(ids | {"seed": seed}), status="ok",
                      val_bpb=1.8, fingerprint="f" * 64, source_hash=runner.source_hash(RAW)) for seed in range(2)),
    ], 1))  # fmt: skip
    cursor = projection.cursor()
    try:
        joined = cursor.execute("""SELECT r.run, r.source_hash, p.code_hash, p.code FROM runs r
                                   JOIN patches p ON r.patch = p.patch ORDER BY r.run""").fetchall()  # fmt: skip
    finally:
        cursor.close()
    assert [run for run, *_ in joined] == ["r0", "r1"]
    for _, source_hash, code_hash, code in joined:
        assert source_hash == hashlib.sha256(code.encode()).hexdigest()
        assert code_hash == rules.code_hash(code) != source_hash
    # No column of one name holds both meanings: a join on code_hash cannot silently match nothing.
    assert "code_hash" not in columns(projection, "runs") and "source_hash" not in columns(projection, "patches")
