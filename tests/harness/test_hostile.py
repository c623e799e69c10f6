"""Hostile train.py variants: each ends in the outcome the acceptance names, and the runner survives."""

from __future__ import annotations

import asyncio
import os
import sysconfig
import time
from pathlib import Path

import pytest

import harness
from harness import guard, tiers
from harness.procs import RunProcesses, marked_pids
from harness.runner import RunResult, run
from swarm.ground.settings import HarnessSettings
from tests.harness.conftest import SMALL_TRAIN
from tests.harness.test_jail import processes_with

SHORT = tiers.Tier(name="test-short", budget_tokens=8_192, train_limit_seconds=8, eval_limit_seconds=60,
                   context_len=64, eval_batch=8, eval_tokens=4_096)


def no_process_left(result: RunResult) -> bool:
    return not marked_pids(Path(result.run_dir).name) and not marked_pids(Path(result.run_dir).name + "-eval")


def test_raises_at_import_is_a_crash_with_the_error(run_small) -> None:
    result = run_small("import torch\nraise ValueError('broken at import')\ndef train(run):\n    pass\n")
    assert result.status == "crash"
    assert "import" in result.reason and "ValueError: broken at import" in result.reason
    assert "train.py line 2" in result.reason


def test_raises_in_training_is_a_crash_and_keeps_metrics(run_small) -> None:
    source = SMALL_TRAIN.replace("        step += 1\n", "        step += 1\n        if step == 3:\n            raise RuntimeError('boom in step 3')\n")
    result = run_small(source)
    assert result.status == "crash"
    assert "RuntimeError: boom in step 3" in result.reason and "training" in result.reason
    assert result.steps == 3 and result.tokens == 3 * 8 * 64  # measured before the failure, not lost
    assert "boom in step 3" in result.log_tail


ESCAPER = """
import os, signal, subprocess, sys, time
import torch

CHILD = "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"

def train(run):
    child = subprocess.Popen([sys.executable, "-c", CHILD, "escaper-child"], start_new_session=True)  # leaves the group
    with open("child.pid", "w") as f:
        f.write(str(child.pid))
    time.sleep(600)
"""


def test_guard_refuses_a_train_py_that_spawns_processes() -> None:
    report = guard.check_source(ESCAPER)
    assert not report.ok
    assert any("subprocess" in p for p in report.problems) and any("open()" in p for p in report.problems)


# ESCAPER's train(), after one reported step: the setsid child that ignores SIGTERM, then sleep forever.
SLEEPER = ESCAPER.replace("def train(run):\n", "def train(run):\n    run.batch(2, 8)\n    run.log(0, 1.0)\n", 1)


def test_sleeping_forever_times_out_and_a_setsid_child_that_ignores_sigterm_dies_with_it(run_small) -> None:
    """One run at SHORT's 8 s limit proves both: the timeout (with its last progress) and the escaper's end."""
    assert SLEEPER != ESCAPER
    result = run_small(SLEEPER, SHORT, guard=False)
    assert result.status == "timeout" and "limit of 8 s" in result.reason
    assert result.tokens == 16 and result.steps == 1  # from its last progress report
    assert result.total_seconds < SHORT.train_limit_seconds + 60  # killed at its limit (the rest is start-up), not at the hard one
    assert (Path(result.run_dir) / "child.pid").exists()  # its pid in the run's namespace: no use here
    assert no_process_left(result)
    assert processes_with("escaper-child") == []


def test_nan_loss_is_diverged_at_once(run_small) -> None:
    source = SMALL_TRAIN.replace("        loss.backward()\n", "        loss = loss * float('nan')\n        loss.backward()\n")
    result = run_small(source)
    assert result.status == "diverged" and "nan" in result.reason
    assert result.steps == 1 and result.val_bpb is None


def test_allocating_past_the_cap_is_oom_and_the_runner_survives(run_small) -> None:
    source = "import torch\n\ndef train(run):\n    blocks = [torch.ones(2**28) for _ in range(64)]  # 64 GiB\n"
    result = run_small(source, settings=HarnessSettings(memory_cap_mb=3_000))
    assert result.status == "oom" and "memory" in result.reason
    assert no_process_left(result)
    assert run_small(SMALL_TRAIN).status == "ok"  # the runner (this process) carries on


def test_memory_polling_catches_a_process_the_address_cap_misses(tmp_path: Path) -> None:
    """GPU runs have no address-space cap: the runner's RSS polling alone must stop them."""
    from harness.runner import _watch

    async def main() -> dict:
        marker = f"test-rss-{os.getpid()}"
        env = dict(os.environ, SWARM_RUN_MARKER=marker)
        code = "import time\nx = []\nwhile True:\n    x.append(bytearray(50 * 2**20))\n    time.sleep(0.05)\n"
        proc = await asyncio.create_subprocess_exec("python", "-c", code, env=env, start_new_session=True)
        try:
            return await _watch(proc, 60, RunProcesses(marker, proc.pid), cap_mb=400)
        finally:
            proc.kill()
            await proc.wait()

    outcome = asyncio.run(main())
    assert outcome["status"] == "oom" and "over the cap of 400 MiB" in outcome["reason"]


def _guesser(prepared_dir: Path) -> str:
    return f"""
import os, glob
import torch

def train(run):
    found = []
    for path in [{str(prepared_dir / "val.bin")!r}, os.path.expanduser("~/.cache/swarm/heldout")]:
        try:
            found.append(open(path, "rb").read(10))
        except IsADirectoryError:
            found.append(os.listdir(path))
    raise SystemExit(f"got the data: {{found}}")
"""


def test_guessing_the_validation_path_is_refused_by_the_guard(prepared) -> None:
    report = guard.check_source(_guesser(prepared.dir))
    assert not report.ok
    assert any("imports os" in p for p in report.problems) and any("open()" in p for p in report.problems)


def test_guessing_the_validation_path_is_denied_by_the_sandbox(run_small, prepared) -> None:
    result = run_small(_guesser(prepared.heldout), guard=False)
    assert result.status == "crash"
    assert "PermissionError" in result.reason and "val.bin" in result.reason
    assert "got the data" not in result.log_tail


def test_the_held_out_splits_live_apart_from_the_training_split(prepared) -> None:
    assert prepared.val_path.is_file() and prepared.audit_path.is_file()
    assert not prepared.heldout.is_relative_to(prepared.dir) and not prepared.dir.is_relative_to(prepared.heldout)
    assert sorted(p.name for p in prepared.dir.iterdir()) == ["manifest.json", "tokenizer.json", "train.bin"]


def test_a_train_log_linked_to_the_validation_split_is_not_copied_into_the_result(run_small, prepared) -> None:
    source = f"import os\n\ndef train(run):\n    os.remove('train.log')\n    os.symlink({str(prepared.val_path)!r}, 'train.log')\n"
    result = run_small(source, guard=False)
    assert result.status == "crash" and result.log_tail.strip() == ""


@pytest.mark.parametrize("where", ["site-packages", "harness"])
def test_writing_outside_the_run_directory_is_denied(run_small, where: str) -> None:
    # A .pth in site-packages would run in every later Python process, the evaluator's included; a
    # module beside the harness's own would be imported by it. Both are refused even where the
    # temporary directory (which train.py may write) holds them: a virtualenv or a checkout in /tmp.
    folder = Path(sysconfig.get_paths()["purelib"]) if where == "site-packages" else Path(harness.__file__).parent
    target = folder / "planted_by_train.pth"
    source = f"def train(run):\n    open({str(target)!r}, 'w').write('import os')\n"
    try:
        result = run_small(source, guard=False)
        assert result.status == "crash" and "PermissionError" in result.reason, result.reason
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


TAMPER = """
    import math
    import harness.evaluate as ev
    import torch.nn.functional as F2
    ev.evaluate = lambda spec: {"status": "ok", "val_bpb": 0.0}
    import harness.probes as probes
    probes.worst_difference = lambda *a, **k: (0.0, "")
    F2.cross_entropy = lambda *a, **k: torch.zeros(())
    math.log = lambda x: 1e9
    torch.Tensor.sum = lambda self, *a, **k: torch.zeros(())
    print("val_bpb: 0.000001")
    print("val_bpb:          0.000001", flush=True)
    return model
"""


def test_monkeypatching_the_evaluation_or_printing_its_own_val_bpb_changes_nothing(run_small, small_baseline: RunResult) -> None:
    """One run of both tamperings: the evaluation patched in the training process, and its own summary printed."""
    assert small_baseline.status == "ok"
    printer = "\n    print('val_bpb: 0.000100')\n    print('---')\n"
    source = SMALL_TRAIN.replace("\n    return model\n", printer + TAMPER)
    assert printer in source
    result = run_small(source, guard=False)
    assert result.status == "ok"
    assert result.val_bpb == small_baseline.val_bpb
    assert "val_bpb: 0.000100" in result.log_tail and "val_bpb: 0.000001" in result.log_tail  # it printed; nobody listened


NON_CAUSAL = """
import torch
import torch.nn as nn

class Peek(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.embed = nn.Embedding(vocab, vocab)

    def forward(self, idx):
        return self.embed(idx.roll(-1, dims=1))  # reads the next token: the answer

def train(run):
    model = Peek(run.vocab_size)
    while not run.done():
        run.batch(8, 64)
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(run.vocab_size) * 30)
    return model
"""


def test_a_model_that_reads_later_tokens_is_rejected(run_small) -> None:
    result = run_small(NON_CAUSAL)
    assert result.status == "rejected" and "model is not causal" in result.reason
    assert result.val_bpb is None


def test_cancelling_a_run_kills_every_process(settings, runs_dir: Path) -> None:
    async def main() -> None:
        patient = tiers.Tier(name="test-patient", budget_tokens=8_192, train_limit_seconds=600, eval_limit_seconds=60,
                             context_len=64, eval_batch=8, eval_tokens=4_096)  # fmt: skip
        task = asyncio.create_task(run(ESCAPER, patient, seed=1, settings=settings, runs_dir=runs_dir, guard=False))
        async with asyncio.timeout(600):  # until it has spawned the child it means to leave behind
            while not [d for d in set(runs_dir.iterdir()) - before if (d / "child.pid").exists()]:
                assert not task.done(), task.result()
                await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    before = set(runs_dir.iterdir())
    asyncio.run(main())
    (run_dir,) = set(runs_dir.iterdir()) - before
    assert (run_dir / "child.pid").exists()  # it got as far as spawning its child
    assert not marked_pids(run_dir.name)


def test_a_run_does_not_outlive_a_runner_killed_outright(prepared, tmp_path: Path) -> None:
    """SIGKILL gives the runner no chance to clean up: the kernel kills its training process."""
    import subprocess
    import sys

    sleeper = "import time\n\ndef train(run):\n    while True:\n        time.sleep(1)\n"
    code = (f"from pathlib import Path\nfrom harness.runner import run_sync\nfrom tests.harness.test_hostile import SHORT\n"
            f"run_sync({sleeper!r}, SHORT, runs_dir=Path({str(tmp_path)!r}))\n")
    runner = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (any(tmp_path.iterdir()) and marked_pids(next(tmp_path.iterdir()).name)):
        time.sleep(0.1)
    marker = next(tmp_path.iterdir()).name
    assert marked_pids(marker)
    runner.kill()
    runner.wait()
    deadline = time.monotonic() + 10
    while marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not marked_pids(marker)
