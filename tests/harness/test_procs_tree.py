"""The runner's watch finds every process of a run by its process tree, in one pass over /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness.procs import RunProcesses

# The leader starts a child, which starts a grandchild in a session of its own (as a run's process
# may do, leaving the process group) and records its pid; then all of them wait.
LEADER = """
import subprocess, sys, time
child = '''
import subprocess, sys, time
grand = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 * 2**20); time.sleep(120)"], start_new_session=True)
open(sys.argv[1], "w").write(str(grand.pid))
time.sleep(120)
'''
subprocess.Popen([sys.executable, "-c", child, sys.argv[1]])
time.sleep(120)
"""


def test_the_tree_holds_a_runs_grandchild_that_left_its_session_with_its_memory(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    leader = subprocess.Popen([sys.executable, "-c", LEADER, str(pid_file)], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        usage = RunProcesses("unused-marker", leader.pid).tree()
        while usage.rss_mb < 64 and time.monotonic() < deadline:  # the grandchild is still allocating
            usage = RunProcesses("unused-marker", leader.pid).tree()
        assert leader.pid in usage.pids and grandchild in usage.pids and len(usage.pids) == 3
        assert os.getpid() not in usage.pids
        assert usage.rss_mb >= 64 and usage.cpu_seconds > 0
    finally:
        os.killpg(leader.pid, 9)
        leader.wait()
        if pid_file.exists() and pid_file.read_text():
            try:
                os.kill(int(pid_file.read_text()), 9)
            except ProcessLookupError:
                pass
