"""The service's collector policy: survivors of a full collection are frozen, and thawed now and then."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# In a process of its own: freezing is process-wide, and pytest's own objects are not ours to freeze.
SCRIPT = """
import gc, sys, time
from swarm.ground.collector import freeze_survivors

thaw = float(sys.argv[1])
freeze_survivors(thaw_seconds=thaw)
started = time.monotonic()
kept = [[i] for i in range(10_000)]  # long-lived state, as the service's grows
gc.collect()
first = gc.get_freeze_count()
while time.monotonic() < started + min(thaw, 1.0) + 0.1:  # the freeze's time runs out (or not, if it is long)
    time.sleep(0.05)
gc.collect()
print(first, gc.get_freeze_count(), len(kept))
"""


def run(thaw_seconds: float) -> list[int]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(thaw_seconds)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [int(x) for x in done.stdout.split()]


def test_what_survives_a_full_collection_is_frozen_so_the_next_one_scans_only_what_is_new() -> None:
    first, second, kept = run(3600)
    assert first >= kept  # the state that survived is out of the next full collection's scan
    assert second >= first


def test_the_freeze_is_lifted_after_its_time_so_cycles_among_frozen_objects_are_reclaimed() -> None:
    first, second, kept = run(0.5)
    assert first >= kept
    assert second == 0  # past its time, the next full collection thaws everything
