"""`swarm harness ...` as a person runs it: output, exit status, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.procs import marked_pids

KEYS = ["val_bpb", "training_seconds", "total_seconds", "tokens", "steps", "params", "peak_memory_mb", "status",
        "tier", "device", "fingerprint", "sandbox"]


def swarm(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarm", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_run_prints_the_key_value_block(tmp_path: Path) -> None:
    done = swarm("harness", "run", "--tier", "sim", "--seed", "2", cwd=tmp_path, SWARM_HARNESS__SIM_SECONDS="0.2")
    assert done.returncode == 0, done.stderr
    block = done.stdout.split("---\n", 1)[1].splitlines()
    assert [line.split(":")[0] for line in block] == KEYS + ["synthetic"]
    assert "status: ok" in block and "tier: sim" in block and "synthetic: true" in block


def test_run_json_has_the_same_keys_and_the_reason(tmp_path: Path) -> None:
    done = swarm("harness", "run", "--tier", "sim", "--json", cwd=tmp_path, SWARM_HARNESS__SIM_SECONDS="0.2")
    record = json.loads(done.stdout)
    assert set(KEYS) | {"reason", "synthetic"} <= set(record) and record["synthetic"] is True
    assert record["status"] == "ok" and isinstance(record["val_bpb"], float)


def test_a_refused_train_py_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ndef train(run):\n    os.system('true')\n")
    done = swarm("harness", "run", "--train", str(bad), "--tier", "sim", "--json", cwd=tmp_path)
    assert done.returncode == 1
    assert json.loads(done.stdout)["status"] == "rejected"
    assert "imports os" in done.stderr


def test_help_explains_exit_status() -> None:
    done = subprocess.run([sys.executable, "-m", "swarm", "harness", "run", "--help"], capture_output=True, text=True)
    assert "Exit status" in done.stdout and "--train" in done.stdout and "--json" in done.stdout


def test_prepare_reports_the_data_and_fingerprint(prepared, tmp_path: Path) -> None:
    done = swarm("harness", "prepare", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"dir: {prepared.dir}" in done.stdout and "fingerprint: " in done.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_kills_the_run_and_everything_it_started(prepared, tmp_path: Path, sig: int) -> None:
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import time\n\ndef train(run):\n    while True:\n        time.sleep(1)\n")
    proc = subprocess.Popen([sys.executable, "-m", "swarm", "harness", "run", "--train", str(sleeper)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / ".swarm" / "runs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (runs.is_dir() and any(runs.iterdir()) and marked_pids(next(runs.iterdir()).name)):
        time.sleep(0.2)
    marker = next(runs.iterdir()).name
    assert marked_pids(marker), "the training process never started"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err
    assert not marked_pids(marker)


def test_a_gpu_tier_on_a_machine_without_cuda_says_so_at_once(tmp_path: Path) -> None:
    done = swarm("harness", "run", "--tier", "standard", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("swarm: tier standard needs a CUDA GPU and this machine has none")
    assert "scripts/gpu_check --cpu" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".swarm").exists()  # nothing was prepared or run
