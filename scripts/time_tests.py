"""Wall seconds of some tests, as pytest's --durations reports them (setup, call and teardown summed
per test), in the working tree or at given commits, to compare a test before and after a change.

    python scripts/time_tests.py tests/harness/test_hostile.py              # the working tree
    python scripts/time_tests.py --at d512a84 --at HEAD tests/cluster       # each commit in turn
    python scripts/time_tests.py                                            # the whole suite

Arguments other than --at go to pytest (files or node ids). A commit's files are exported (git
archive) to a temporary folder and its tests run there, with PYTHONPATH set to it so the swarm's
subprocesses import that commit's code. Commits run one after the other: figures from a busy machine
are inflated, so compare only runs made beside the same load, and quote the load (`uptime`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(\S+)")


def time_tests(checkout: Path, args: list[str]) -> int:
    """Run the tests in `checkout` and print each one's seconds, slowest first, and the total."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0", "-vv", *args],
                          cwd=checkout, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(checkout)})  # fmt: skip
    per_test: dict[str, float] = defaultdict(float)
    for line in done.stdout.splitlines():
        if found := LINE.match(line):
            per_test[found.group(3)] += float(found.group(1))
    for test, seconds in sorted(per_test.items(), key=lambda item: -item[1]):
        print(f"{seconds:8.2f}s  {test}")
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "no output"
    print(f"{sum(per_test.values()):8.2f}s  in all ({last})", flush=True)
    if done.returncode != 0:
        print(done.stdout[-4000:] + done.stderr[-2000:], file=sys.stderr)
    return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", action="append", default=[], metavar="COMMIT", help="time the tests at this commit (repeatable)")
    known, pytest_args = parser.parse_known_args()
    if not known.at:
        return time_tests(ROOT, pytest_args)
    status = 0
    for commit in known.at:
        with tempfile.TemporaryDirectory(prefix="time-tests-") as folder:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
            print(f"== {commit} ({os.getloadavg()[0]:.2f} load)", flush=True)
            status = time_tests(Path(folder), pytest_args) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
