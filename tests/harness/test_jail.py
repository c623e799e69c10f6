"""The OS sandbox alone (the guard switched off) stops a hostile train.py's reads, writes, network and escapes.

One hostile train.py tries every attack at the start of train(), writes what each gave into
attacks.json in its run directory, and returns nothing (a crash, in seconds). Each test asserts on
one attack. A daemon outliving its run, or writing a score into the evaluator's channel, needs a run
that trains and is scored, so those run the shrunk baseline with the attack added.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sysconfig
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

import harness
from harness import jail
from harness.prepare import Prepared
from harness.runner import RunResult
from tests.harness.conftest import SMALL_TRAIN

ATTACKS = '''
import ctypes, json, mmap, os, socket, subprocess, sys
import torch

VAL, RUNNER, PORT, SIBLING = {val!r}, {runner}, {port}, {sibling!r}
PLANTS = {plants!r}


def attempt(action):
    try:
        result = action()
        return "WORKED" if result is None else result
    except BaseException as exc:
        return f"refused: {{type(exc).__name__}}: {{exc}}"


def libc_read(path):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.open(path.encode(), os.O_RDONLY)
    if fd < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    buffer = ctypes.create_string_buffer(16)
    return "WORKED" if libc.read(fd, buffer, 16) == 16 else "read nothing"


def mmap_read(path):
    with open(path, "rb") as handle:
        mmap.mmap(handle.fileno(), 16, prot=mmap.PROT_READ)[:16]


def shell_read(path):
    done = subprocess.run(["sh", "-c", f"head -c 16 {{path}} | wc -c"], capture_output=True, text=True)
    return "WORKED" if done.stdout.strip() == "16" else f"refused: {{done.stderr.strip()}}"


def plant(how, path):
    if how == "open":
        open(path, "w").write("import os")
    elif how == "torch.save":
        torch.save(torch.zeros(1), path)
    elif how == "ctypes":
        fd = ctypes.CDLL(None, use_errno=True).open(path.encode(), os.O_WRONLY | os.O_CREAT, 0o644)
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    elif how == "shell":
        done = subprocess.run(["sh", "-c", f"echo x > {{path}}"], capture_output=True, text=True)
        if done.returncode:
            raise OSError(done.stderr.strip())


def connect():
    with socket.create_connection(("127.0.0.1", PORT), timeout=3) as conn:
        conn.sendall(b"publish")


def train(run):
    report = {{
        "from_file": attempt(lambda: getattr(torch.UntypedStorage, "from_file")(VAL, False, 16) and None),
        "libc_open": attempt(lambda: libc_read(VAL)),
        "shell": attempt(lambda: shell_read(VAL)),
        "mmap": attempt(lambda: mmap_read(VAL)),
        "proc_environ": attempt(lambda: open(f"/proc/{{RUNNER}}/environ", "rb").read() and None),
        "proc_fd": attempt(lambda: os.listdir(f"/proc/{{RUNNER}}/fd") and None),
        "proc_cwd": attempt(lambda: os.listdir(f"/proc/{{RUNNER}}/cwd") and None),
        "proc_parent_fd": attempt(lambda: os.listdir(f"/proc/{{os.getppid()}}/fd") and None),
        "visible_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "tcp": attempt(connect),
        "sibling_list": attempt(lambda: os.listdir(os.path.dirname(SIBLING)) and None),
        "sibling_read": attempt(lambda: open(SIBLING).read() and None),
        "write_run_dir": attempt(lambda: plant("ctypes", "mine.txt")),
    }}
    for where, path in PLANTS.items():
        for how in ("open", "torch.save", "ctypes", "shell"):
            report[f"write {{where}} {{how}}"] = attempt(lambda: plant(how, path))
    with open("attacks.json", "w") as handle:
        json.dump(report, handle)
'''

# Started at the start of train(): a double-forked daemon with an empty environment (the marker sweep
# cannot find it) that, for 40 s, writes a perfect score into every pipe and the stdout of its own
# run's evaluator (found by the marker in its environment: never another process of this machine).
DAEMON = '''
import os, subprocess, sys

SPY = """
import os, sys, time
run = os.path.basename(os.getcwd())
open('daemon.started', 'w').write(str(os.getpid()))
fake = b'{{"status": "ok", "val_bpb": 0.001}}\\\\n'
end = time.time() + 40
while time.time() < end:
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            if f'SWARM_RUN_MARKER={{run}}-eval'.encode() not in open(f'/proc/{{pid}}/environ', 'rb').read().split(b'\\\\0'):
                continue
            for fd in os.listdir(f'/proc/{{pid}}/fd'):
                if os.readlink(f'/proc/{{pid}}/fd/{{fd}}').startswith('pipe:') or fd == '1':
                    with open(f'/proc/{{pid}}/fd/{{fd}}', 'wb') as handle:
                        handle.write(fake)
                    open('daemon.wrote', 'w').close()
        except OSError:
            pass
    time.sleep(0.01)
"""


def start_daemon():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execve(sys.executable, [sys.executable, "-c", SPY, {token!r}], {{}})
        os._exit(0)
    os.wait()
'''


def processes_with(token: str) -> list[int]:
    """Host pids of live processes whose command line holds `token` (pids in a jail mean nothing here)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and token.encode() in (entry / "cmdline").read_bytes():
                state = (entry / "stat").read_text().rsplit(") ", 1)[1][0]
                if state not in "ZX":
                    found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    yield server
    server.close()


@pytest.fixture(scope="module")
def planted(prepared: Prepared) -> Iterator[dict[str, str]]:
    paths = {"harness": str(Path(harness.__file__).parent / "planted_by_train.py"),
             "site-packages": str(Path(sysconfig.get_paths()["purelib"]) / "planted_by_train.pth"),
             "data cache": str(prepared.dir / "planted_by_train.bin")}
    yield paths
    for path in paths.values():
        Path(path).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def attacked(run_small, prepared: Prepared, runs_dir: Path, listener: socket.socket,
             planted: dict[str, str]) -> tuple[RunResult, dict[str, Any]]:  # type: ignore[no-untyped-def]
    sibling = runs_dir / f"sibling-{uuid.uuid4().hex[:8]}"
    sibling.mkdir()
    (sibling / "model.pt2").write_text("a sibling's exported model")
    source = ATTACKS.format(val=str(prepared.val_path), runner=os.getpid(), port=listener.getsockname()[1],
                            sibling=str(sibling / "model.pt2"), plants=planted)
    result = run_small(source, guard=False)
    report = json.loads((Path(result.run_dir) / "attacks.json").read_text())
    return result, report


def test_the_machine_gives_every_layer() -> None:
    assert jail.support() == f"landlock{jail.landlock_abi()}+userns+netns+pidns+seccomp"


def test_a_run_says_which_sandbox_it_had(attacked: tuple[RunResult, dict[str, Any]]) -> None:
    result, report = attacked
    assert result.sandbox == jail.support()
    assert report["write_run_dir"] == "WORKED"  # the attacks ran, and the run directory stays writable


@pytest.mark.parametrize("how", ["from_file", "libc_open", "shell", "mmap"])
def test_the_validation_split_cannot_be_read(attacked: tuple[RunResult, dict[str, Any]], how: str) -> None:
    assert attacked[1][how].startswith("refused"), attacked[1][how]


@pytest.mark.parametrize("what", ["proc_environ", "proc_fd", "proc_cwd", "proc_parent_fd"])
def test_no_host_process_can_be_seen_through_proc(attacked: tuple[RunResult, dict[str, Any]], what: str) -> None:
    report = attacked[1]
    assert report[what].startswith("refused"), report[what]
    assert report["visible_pids"] == [1]  # itself, PID 1 of its own namespace


def test_no_tcp_connection_even_to_loopback(attacked: tuple[RunResult, dict[str, Any]], listener: socket.socket) -> None:
    assert attacked[1]["tcp"].startswith("refused"), attacked[1]["tcp"]
    with pytest.raises(TimeoutError):
        listener.accept()


@pytest.mark.parametrize("where", ["harness", "site-packages", "data cache"])
@pytest.mark.parametrize("how", ["open", "torch.save", "ctypes", "shell"])
def test_nothing_outside_the_run_directory_can_be_written(
    attacked: tuple[RunResult, dict[str, Any]], planted: dict[str, str], where: str, how: str
) -> None:
    assert attacked[1][f"write {where} {how}"].startswith("refused"), attacked[1][f"write {where} {how}"]
    assert not Path(planted[where]).exists()


def test_a_sibling_run_cannot_be_read(attacked: tuple[RunResult, dict[str, Any]]) -> None:
    assert attacked[1]["sibling_list"].startswith("refused") and attacked[1]["sibling_read"].startswith("refused")


def test_a_daemon_dies_with_its_run_and_cannot_write_the_score(run_small, small_baseline: RunResult) -> None:  # type: ignore[no-untyped-def]
    token = f"swarm-daemon-{uuid.uuid4().hex}"
    header = "def train(run: Run) -> nn.Module:\n"
    assert header in SMALL_TRAIN
    source = DAEMON.format(token=token) + SMALL_TRAIN.replace(header, header + "    start_daemon()\n", 1)
    result = run_small(source, guard=False)
    assert (Path(result.run_dir) / "daemon.started").exists()  # it ran, forked twice, left the session
    assert result.status == "ok" and result.val_bpb == small_baseline.val_bpb  # the fake score never arrived
    assert processes_with(token) == []


def test_an_unprivileged_user_gets_the_same_sandbox(tmp_path: Path) -> None:
    """The self-check of the jail, as a user without root, with the system's Python.

    This interpreter lives under /root (mode 700), which no other user may enter, so the check runs
    on /usr/bin/python3 (the jail is pure standard library) from a copy of jail.py.
    """
    python = shutil.which("python3", path="/usr/bin")
    if python is None or os.geteuid() != 0:
        pytest.skip("needs root (to add a user) and /usr/bin/python3")
    user = "swarmjail"
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", user], check=True)
    work = Path(tempfile_dir()) / f"jail-check-{uuid.uuid4().hex[:8]}"
    (work / "run").mkdir(parents=True)
    shutil.copy(jail.__file__, work / "jail.py")
    secret = work / "secret.txt"
    secret.write_text("the validation split")
    shutil.chown(work / "run", user)
    for path in (work / "jail.py", secret):
        path.chmod(0o644)  # readable by the user: only the sandbox stands in the way
    work.chmod(0o777)  # writable by the user too
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        done = subprocess.run(["runuser", "-u", user, "--", python, "-I", str(work / "jail.py"), "--check",
                               str(work / "run"), str(secret), str(server.getsockname()[1])],
                              capture_output=True, text=True, timeout=60)
    finally:
        server.close()
        shutil.rmtree(work)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["layers"] == jail.support()
    assert report["read_secret"].startswith("refused") and report["shell_read_secret"] is False
    assert report["connect_tcp"].startswith("refused") and report["write_outside"].startswith("refused")
    assert report["unix_socket"].startswith("refused") and report["visible_pids"] == [1]
    assert report["write_run_dir"] is True


def tempfile_dir() -> str:
    """A directory every user can enter (pytest's tmp_path lies under /tmp/pytest-of-root, mode 700)."""
    import tempfile

    return tempfile.gettempdir()
