"""The README's "Several machines" section, followed literally on hosts made of network namespaces.

Each host has its own address and host name; the commands are the README's own lines, with the
placeholders of its example (the password, the head's address) replaced by what the head printed.
The tier is set to `sim` by environment (SWARM_HARNESS__TIER), which the commands leave alone, so
the runs take 0.3 s. The launcher `scripts/swarm-ssh` is run with `SWARM_SSH` set to a command
that does on a namespace what ssh does on a machine: a shell in the host's home, under its name.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.hosts import Host, hosts
from tests.cluster.test_machines import Lines

ROOT = Path(__file__).resolve().parents[2]
SIM = {"SWARM_HARNESS__TIER": "sim", "SWARM_HARNESS__SIM_SECONDS": "0.3", "PYTHONPATH": str(ROOT),
       "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # `swarm` is where this Python's scripts are
PASSWORD, HEAD_IP = "PASSWORD", "10.0.0.1"  # the README's placeholders


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def blocks(text: str) -> list[str]:
    """The section's fenced blocks, in order, each as its lines without comments."""
    return [body.strip() for body in re.findall(r"```[a-z]*\n(.*?)```", text, re.S)]


def swarm_line(block: str) -> list[str]:
    [line] = [line for line in block.splitlines() if line.strip().startswith("swarm ")]
    return shlex.split(line, comments=True)


def status_json(host: Host, argv: list[str], cwd: Path) -> dict:
    """The README's status command, as JSON (the same command with --format json) on `host`."""
    done = subprocess.run([*host.prefix(), *argv, "--format", "json"], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **SIM}, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for_nodes(host: Host, argv: list[str], cwd: Path, names: set[str], timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = status_json(host, argv, cwd)
        working = {node["node"] for node in status["nodes"] if node["runs"] > 0}
        if names <= working:
            return status
        assert time.monotonic() < deadline, f"no runs from {names - working} in {timeout} s: {status['nodes']}"
        time.sleep(2)


@pytest.mark.slow
def test_the_several_machines_section_works_as_written(tmp_path: Path) -> None:
    text = section("Several machines")
    head_block, printed, join_block, status_block = blocks(text)[:4]
    head_argv = swarm_line(head_block)
    assert head_argv == ["swarm", "head"], "the section's first command starts the head"
    template = printed.splitlines()[-1].strip()
    assert swarm_line(join_block) == shlex.split(template), "the join line is the printed one"

    with hosts(["head", "gpu1", "gpu2"]) as machines:
        head, gpu1, gpu2 = machines["head"], machines["gpu1"], machines["gpu2"]
        homes = {name: tmp_path / name for name in machines}
        for home in homes.values():
            home.mkdir()
        started = head.run(head_argv, cwd=homes["head"], env=SIM)
        out = Lines(started)
        pattern = re.escape(template).replace(PASSWORD, r"(\S+)").replace(re.escape(HEAD_IP), r"(\S+)")
        password, address = out.wait_for(pattern).groups()
        assert address == head.ip, "the head advertises its machine's address"
        kept = out.wait_for(r"also in (\S+)\):").group(1)
        assert Path(kept).read_text().strip() == template.replace(PASSWORD, password).replace(HEAD_IP, address)

        def literal(argv: list[str]) -> list[str]:
            return [arg.replace(PASSWORD, password).replace(HEAD_IP, address) for arg in argv]

        for node in (gpu1, gpu2):  # joined while the swarm already runs; their output read (a full pipe blocks them)
            Lines(node.run(literal(swarm_line(join_block)), cwd=homes[node.hostname], env=SIM))
        status = wait_for_nodes(gpu2, literal(swarm_line(status_block)), homes["gpu2"], {"gpu1", "gpu2"})
        assert status["live"] and {"head", "gpu1", "gpu2"} <= {node["node"] for node in status["nodes"]}
        table = subprocess.run([*gpu1.prefix(), *literal(swarm_line(status_block))], cwd=homes["gpu1"], text=True,
                               capture_output=True, env={**os.environ, **SIM}, timeout=60)  # fmt: skip
        assert table.returncode == 0 and "gpu2" in table.stdout and password not in table.stdout, table.stderr
        for node in (gpu1, gpu2, head):  # Ctrl-C on each machine
            node.stop_all()
        for process in (*gpu1.processes, *gpu2.processes, started):
            assert process.returncode == 0
    assert "runs:" in "\n".join(out.lines)


SSH = """#!/bin/sh
# ssh HOST COMMAND, for hosts that are network namespaces: a shell in HOST's home, under its name
host=$1; shift
cd "{homes}/$host" && exec ip netns exec "$(cat "{homes}/$host.ns")" unshare --uts sh -c 'hostname "$0"; cd "$1"; eval "$2"' "$host" "$PWD" "$*"
"""


@pytest.mark.slow
def test_the_ssh_launcher_starts_and_stops_a_swarm(tmp_path: Path) -> None:
    with hosts(["head", "gpu1", "gpu2"]) as machines:
        for name, host in machines.items():
            (tmp_path / name).mkdir()
            (tmp_path / f"{name}.ns").write_text(host.name)
        ssh = tmp_path / "fake-ssh"
        ssh.write_text(SSH.format(homes=tmp_path))
        ssh.chmod(0o755)
        env = {**os.environ, **SIM, "SWARM_SSH": str(ssh)}
        launched = subprocess.run([str(ROOT / "scripts" / "swarm-ssh"), "head", "gpu1", "gpu2", "--", "--tier", "sim"],
                                  capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        assert launched.returncode == 0, launched.stdout + launched.stderr
        watch = re.search(r"Watch: (.+) --watch", launched.stdout)
        assert watch, launched.stdout
        status_argv = shlex.split(watch.group(1))  # `fake-ssh head swarm status --dir ...`
        deadline = time.monotonic() + 180
        while True:
            done = subprocess.run([*status_argv, "--format", "json"], capture_output=True, text=True, env=env, timeout=60)
            assert done.returncode == 0, done.stderr
            nodes = {node["node"]: node["runs"] for node in json.loads(done.stdout)["nodes"]}
            if all(nodes.get(name, 0) > 0 for name in machines):
                break
            assert time.monotonic() < deadline, f"not every machine runs work: {nodes}"
            time.sleep(2)
        pids = {name: int((tmp_path / name / "swarm-run" / f"{'head' if name == 'head' else 'node'}.pid").read_text())
                for name in machines}  # fmt: skip
        stopped = subprocess.run([str(ROOT / "scripts" / "swarm-ssh"), "--stop", "head", "gpu1", "gpu2"],
                                 capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
        assert stopped.returncode == 0, stopped.stderr
        deadline = time.monotonic() + 90
        while any(_alive(pid) for pid in pids.values()):
            assert time.monotonic() < deadline, "the swarm did not stop"
            time.sleep(0.5)
    head_out = (tmp_path / "head" / "swarm-run" / "head.out").read_text()
    assert "runs:" in head_out, head_out[-2000:]
    for name in ("gpu1", "gpu2"):
        node_out = (tmp_path / name / "swarm-run" / "node.out").read_text()
        assert f"{name} left the swarm" in node_out, node_out[-2000:]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has stopped
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False
