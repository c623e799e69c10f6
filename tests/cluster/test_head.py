"""swarm head's options on loopback: nkey auth, TLS with a generated CA, a cluster of three servers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blackboard.client import Board
from swarm.ground.bus import Bus
from swarm.ground.settings import Credentials
from tests.cluster.test_machines import Lines

SIM = {**os.environ, "SWARM_HARNESS__SIM_SECONDS": "0.3", "SWARM_BOARD__LEASE_SECONDS": "10"}


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "swarm", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=SIM, start_new_session=True)  # fmt: skip


def stop(*outputs: Lines, timeout: float = 180) -> None:
    """Ctrl-C each process; one that has not stopped within `timeout` fails the test with its last lines."""
    for out in outputs:
        if out.process.poll() is None:
            os.killpg(out.process.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout  # generous: a 3-server head draining beside a busy suite took over 90 s
    for out in outputs:
        try:
            out.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in outputs:
                other.process.poll() is None and os.killpg(other.process.pid, signal.SIGKILL)
            raise AssertionError(f"`swarm {out.process.args[3]}` did not stop in {timeout:.0f} s after Ctrl-C; "
                                 "its last lines:\n" + "\n".join(out.lines[-40:])) from None


def join_parts(command: str) -> list[str]:
    """The `swarm join ...` part of the printed command (after any scp of files to copy)."""
    return command.split(" && ")[-1].split()[2:]


@pytest.mark.parametrize("auth", ["nkey", "tls"])
def test_a_head_admits_nodes_with_its_credentials_and_refuses_others(auth: str, tmp_path: Path) -> None:
    (tmp_path / "head").mkdir()
    (tmp_path / "node").mkdir()
    extra = ["--auth", "nkey"] if auth == "nkey" else ["--auth", "password", "--tls"]
    head = start("head", "--listen", "127.0.0.1:-1", "--tier", "sim", "--no-node", "--no-view", *extra, cwd=tmp_path / "head")
    out, node = Lines(head), None
    try:
        command = out.wait_for(r"^\s+((scp .+ && )?swarm join .+)$").group(1)
        credentials = tmp_path / "head" / ".swarm" / "credentials"
        if auth == "nkey":
            assert command.startswith(f"scp ") and "node.nk" in command and "--nkey node.nk" in command
            args = [a if a != "node.nk" else str(credentials / "node.nk") for a in join_parts(command)]
            refused_args = [args[0]]  # the URL alone: no seed
        else:
            assert "--tls-ca ca.pem" in command and re.search(r"nats://swarm:[^@]+@", command)
            args = [a if a != "ca.pem" else str(credentials / "ca.pem") for a in join_parts(command)]
            refused_args = [args[0]]  # the password, but no CA: the head's certificate cannot be trusted
        refused = start("join", *refused_args, "--no-view", cwd=tmp_path / "node")
        said = refused.communicate(timeout=90)[0]
        assert refused.returncode == 2 and "cannot connect" in said, said
        node = Lines(start("join", *args, "--no-view", "--name", "n1", cwd=tmp_path / "node"))
        node.wait_for(r"^joined ")
    finally:
        stop(*[lines for lines in (node, out) if lines is not None])
    assert head.returncode == 0, "\n".join(out.lines[-20:])


async def wait_runs(url: str, creds: Credentials, count: int, timeout: float = 120) -> int:
    bus = await Bus.connect(url.split(","), name="test", credentials=creds, wait=10)
    board = Board(bus, "test", retry_seconds=30)
    try:
        deadline = time.monotonic() + timeout
        while (done := (await board.stats())["service"]["runs_finished"]) < count:
            assert time.monotonic() < deadline, f"only {done} runs in {timeout} s"
            await asyncio.sleep(0.5)
        info = await bus.js.stream_info("SWARM")
        return info.config.num_replicas
    finally:
        await bus.close()


def server_pids(swarm_dir: Path, name: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"nats-server" in cmd and str(swarm_dir / name).encode() + b"/nats-server.conf" in cmd:
                found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_three_servers_replicate_the_stream_and_survive_losing_one(tmp_path: Path) -> None:
    head = start("head", "--listen", "127.0.0.1:-1", "--servers", "3", "--tier", "sim", "--no-view", cwd=tmp_path)
    out = Lines(head)
    try:
        url = out.wait_for(r"NATS at (\S+),").group(1)
        assert len(url.split(",")) == 3
        creds = Credentials()
        assert asyncio.run(wait_runs(url, creds, 4)) == 3, "the stream must be replicated three ways"
        [victim] = server_pids(tmp_path / ".swarm", "nats-1")
        os.kill(victim, signal.SIGKILL)
        asyncio.run(wait_runs(url, creds, 10, timeout=180))  # the swarm goes on with two of three
    finally:
        stop(out)
    assert head.returncode == 0, "\n".join(out.lines[-20:])
    assert "runs:" in "\n".join(out.lines)
