"""Time the cluster and ladder tests (the suite's slowest), at one or more commits, and print each.

    python scripts/time_cluster_tests.py                  # the working tree
    python scripts/time_cluster_tests.py d512a84 HEAD     # each commit, in a folder of its own

Each commit's files are exported (git archive) to a temporary folder and its tests run there (PYTHONPATH
set to it, so the swarm's subprocesses import that commit's code), one commit after the other. Prints
each test's call time and the commit's total, from pytest's own --durations. Needs root (the cluster
tests make network namespaces). Quote the machine and its load with the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ["tests/cluster", "tests/swarm/test_ladder.py"]
DURATION = re.compile(r"^([\d.]+)s call\s+(\S+)$")


def durations(checkout: Path) -> tuple[dict[str, float], str]:
    """Each test's call seconds in `checkout`, and pytest's summary (its failures, then its last line)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0", *FILES],
                          cwd=checkout, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(checkout)})  # fmt: skip
    found = {m.group(2): float(m.group(1)) for line in done.stdout.splitlines() if (m := DURATION.match(line.strip()))}
    failures = [line for line in done.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    last = next((line for line in reversed(done.stdout.splitlines()) if " in " in line), done.stdout[-500:])
    summary = "\n".join([last.strip(), *failures])
    return found, summary


def timed(rev: str | None) -> None:
    if rev is None:
        found, summary = durations(ROOT)
    else:
        with tempfile.TemporaryDirectory(prefix="timing-") as scratch:
            archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", scratch], input=archive, check=True)
            found, summary = durations(Path(scratch))
    print(f"== {rev or 'working tree'}: {summary.strip()}")
    for test, seconds in sorted(found.items(), key=lambda item: -item[1]):
        print(f"{seconds:8.2f}s  {test}")
    print(f"{sum(found.values()):8.2f}s  total of the calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs="*", help="commits to time (default: the working tree)")
    revs = parser.parse_args().revs
    for rev in revs or [None]:
        timed(rev)


if __name__ == "__main__":
    main()
