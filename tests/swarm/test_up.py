"""`swarm up` as a person runs it: a whole swarm of processes, on the sim tier so it takes seconds."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from tests.terminal import Terminal

SIM = {"SWARM_HARNESS__SIM_SECONDS": "0.3", "SWARM_BOARD__LEASE_SECONDS": "5"}


def up(directory: Path, *args: str, env: dict[str, str] | None = None, view: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "swarm", "up", "--dir", str(directory), "--tier", "sim", *([] if view else ["--no-view"]), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **SIM, **(env or {})},
    )  # fmt: skip


def board(directory: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(directory / "board.duckdb"), read_only=True)


def swarm_processes(directory: Path) -> list[int]:
    """Processes still running with this swarm directory on their command line."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(directory).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


class Output:
    """The swarm's output, collected by a thread as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process, self.lines = process, []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_runs(self, count: int, timeout: float = 120, old: frozenset[str] = frozenset()) -> None:
        """Until `count` run lines, not counting the runs in `old` (a resumed swarm shows its history's too)."""
        deadline = time.monotonic() + timeout
        while sum(1 for line in self.lines if line.strip().startswith("run r-") and line.split()[1] not in old) < count:
            assert self.process.poll() is None, "\n".join(self.lines)
            assert time.monotonic() < deadline, f"fewer than {count} runs in {timeout} s:\n" + "\n".join(self.lines[-30:])
            time.sleep(0.2)

    def finish(self, timeout: float) -> str:
        self.process.wait(timeout)
        self.thread.join(10)
        return "\n".join(self.lines)


def test_up_with_max_runs_ends_by_itself_with_every_run_recorded(tmp_path: Path) -> None:
    directory = tmp_path / "swarm"
    process = up(directory, "--max-runs", "12")
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    with board(directory) as db:
        statuses = db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
        assert sum(n for _, n in statuses) == 12 and "running" not in dict(statuses), statuses
        # the same code after normalisation (the board's dedup), not the same bytes, is explored once
        twice = db.execute("""SELECT p.code_hash, count(*) FROM runs r JOIN patches p ON p.patch = r.patch
                              WHERE r.purpose = 'explore' AND r.status <> 'lost'
                              GROUP BY p.code_hash HAVING count(*) > 1""").fetchall()  # fmt: skip
        assert twice == [], "the same code was explored twice"
        promoted = db.execute("SELECT patch FROM bests WHERE previous IS NOT NULL").fetchall()
        verdicts = db.execute("SELECT patch, outcome FROM replications").fetchall()
        # the summary says what the board decided: each promotion, or each verdict when there was none
        if promoted:
            assert all(f": {patch} " in out for (patch,) in promoted), out
        else:
            assert "no promotion, because:" in out, out
            assert all(f"  {patch} " in out and f": {outcome}: " in out for patch, outcome in verdicts), out
        replicated = db.execute("""SELECT count(*) FROM runs r JOIN runs e ON e.patch = r.patch
                                   WHERE r.purpose = 'replicate' AND e.purpose = 'explore'""").fetchone()[0]  # fmt: skip
        # A restacked winner (a transfer on one rung, blackboard.cascade) is replicated without an explore run.
        restacked = db.execute("""SELECT count(*) FROM runs r JOIN patches p USING (patch) JOIN work w ON w.work = p.work
                                  WHERE r.purpose = 'replicate' AND w.work_kind = 'transfer'""").fetchone()[0]  # fmt: skip
        assert replicated + restacked == db.execute("SELECT count(*) FROM runs WHERE purpose = 'replicate'").fetchone()[0]
        held = db.execute("SELECT count(*) FROM claims WHERE status = 'held'").fetchone()[0]
        assert held == 0, "a claim was left held after the swarm stopped"
    assert swarm_processes(directory) == []


def test_ctrl_c_drains_cleanly_the_swarm_resumes_where_it_stopped_and_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    """One directory, three swarms: Ctrl-C drains the first; the second goes on with its history until a
    double Ctrl-C stops it at once; the third opens the stream and the board again, nothing corrupted."""
    directory = tmp_path / "swarm"
    process = up(directory)
    output = Output(process)
    output.wait_for_runs(4)
    process.send_signal(signal.SIGINT)
    out = output.finish(timeout=120)
    assert process.returncode == 0, out
    assert "stopping: agents drain" in out and "runs:" in out
    assert swarm_processes(directory) == []
    with board(directory) as db:
        done = frozenset(run for (run,) in db.execute("SELECT run FROM runs WHERE status <> 'running'").fetchall())
        assert db.execute("SELECT count(*) FROM claims WHERE status = 'held'").fetchone()[0] == 0
    before = len(done)
    assert before >= 4
    process = up(directory)  # resumes: its runs add to the first swarm's
    output = Output(process)
    output.wait_for_runs(3, old=done)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    output.finish(timeout=30)
    assert time.monotonic() - started < 10
    assert process.returncode == 130
    deadline = time.monotonic() + 30  # children get SIGTERM from the kernel when their parent dies
    while swarm_processes(directory) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert swarm_processes(directory) == []
    with board(directory) as db:
        resumed = db.execute("SELECT count(*) FROM runs WHERE status <> 'running'").fetchone()[0]
    assert resumed >= before + 3, "the second swarm's runs did not add to the first one's history"
    again = up(directory, "--max-runs", "1")  # the stream and the board open again, and the swarm goes on
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    with board(directory) as db:
        arenas = db.execute("SELECT count(*) FROM arenas").fetchone()[0]
        assert db.execute("SELECT count(*) FROM parked").fetchone()[0] == 0
    assert arenas == 1, "the later swarms did not continue the first one's history"


def test_the_live_view_draws_updates_and_ctrl_c_drains_in_a_terminal(tmp_path: Path) -> None:
    directory = tmp_path / "swarm"
    argv = [sys.executable, "-m", "swarm", "up", "--dir", str(directory), "--tier", "sim"]
    terminal = Terminal(argv, env={**os.environ, **SIM})
    try:
        def done(out: str) -> set[int]:
            return {int(n) for n in re.findall(r"runs (\d+) done", out)}

        drawn = terminal.wait_for(lambda out: "recent runs" in out and "agents" in out, "the live view's tables")
        assert "\x1b[" in drawn, "not drawn as a live view (no cursor control)"
        terminal.wait_for(lambda out: len(done(out)) >= 3, "the view updating as runs finish")
        terminal.interrupt()
        assert terminal.wait() == 0, terminal.text[-4000:]
        assert "stopping: agents drain" in terminal.plain and "runs:" in terminal.plain
    finally:
        terminal.close()
    assert swarm_processes(directory) == []
    with board(directory) as db:
        assert db.execute("SELECT count(*) FROM claims WHERE status = 'held'").fetchone()[0] == 0


@pytest.mark.parametrize("bad", [["--tier", "huge"], ["--duration", "soon"], ["--devices", "cuda:7"]])
def test_bad_options_are_one_clear_line_and_start_nothing(tmp_path: Path, bad: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "swarm", "up", "--dir", str(tmp_path / "s"), *bad],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().startswith("swarm:") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_several_slots_of_one_device_run_that_many_runs_at_once(tmp_path: Path) -> None:
    directory = tmp_path / "swarm"
    # 15 runs: the baseline's 3, and room for three explores with the seeds each may need (the hold-back)
    process = up(directory, "--devices", "cpu*3", "--max-runs", "15", env={"SWARM_HARNESS__SIM_SECONDS": "3"})
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    with board(directory) as db:
        runs = db.execute("SELECT device, epoch(started_at), epoch(finished_at) FROM runs WHERE finished_at IS NOT NULL").fetchall()
    assert {device for device, _, _ in runs} == {"cpu#0", "cpu#1", "cpu#2"}, runs
    at_once = max(sum(1 for _, s, f in runs if s <= start < f) for _, start, _ in runs)
    assert at_once == 3, f"at most {at_once} runs at once on three slots: {runs}"


def test_up_into_a_pipe_prints_a_line_per_change_not_a_final_table(tmp_path: Path) -> None:
    process = up(tmp_path / "swarm", "--max-runs", "2", view=True)  # the live view asked for, no terminal
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    assert any(line.startswith("  run r-") for line in out.splitlines()), out  # the log view's run lines
    assert not any(mark in out for mark in ("┃", "━", "┏")), "a table drawn for a terminal went into the pipe"



def test_duration_stops_the_swarm_and_every_run_it_started_is_recorded_or_said_lost(tmp_path: Path) -> None:
    directory = tmp_path / "swarm"
    process = up(directory, "--duration", "12s")
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    with board(directory) as db:
        statuses = dict(db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
    assert statuses and "running" not in statuses, statuses  # each one finished, or was declared lost
    total = sum(statuses.values())
    summary = next(line for line in out.splitlines() if line.startswith("runs: "))
    assert summary.startswith(f"runs: {total} recorded, {statuses.get('ok', 0)} ok, ") and \
        f", {statuses.get('lost', 0)} lost, 0 unfinished" in summary, (summary, statuses)  # fmt: skip
    assert swarm_processes(directory) == []
