"""Wall seconds of some tests, as pytest's --durations reports them: setup, call and teardown summed per test.

    python scripts/time_tests.py tests/harness/test_hostile.py tests/harness/test_run_budgets.py

Arguments go to pytest (files or node ids). Run it at two commits to compare a test before and after a
change; figures from a busy machine are inflated, so compare only runs made beside the same load.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(\S+)")


def main(args: list[str]) -> int:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0", "-vv", *args],
                          capture_output=True, text=True)  # fmt: skip
    per_test: dict[str, float] = defaultdict(float)
    for line in done.stdout.splitlines():
        if found := LINE.match(line):
            per_test[found.group(3)] += float(found.group(1))
    for test, seconds in sorted(per_test.items(), key=lambda item: -item[1]):
        print(f"{seconds:8.2f}s  {test}")
    print(f"{sum(per_test.values()):8.2f}s  in all ({done.stdout.strip().splitlines()[-1] if done.stdout.strip() else 'no output'})")
    if done.returncode != 0:
        print(done.stdout[-4000:] + done.stderr[-2000:], file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
