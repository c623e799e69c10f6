"""The training process: call train(run) with batches the runner serves, export. FIXED.

=====================================================================================================
Started by the runner as a fresh interpreter in the run directory (its cwd), in its own process
group, through harness.procs.boot: it reads its instructions as one JSON object on stdin (so
neither argv nor the environment names the data) and enters the OS sandbox (harness.jail) before
anything else, so train.py and all it starts can read only the interpreter, the packages and the
harness, write only the run directory and a private temporary directory, reach no network and
outlive nothing. The training split never enters this process: the runner serves each batch
through a pipe (harness.feeder) and keeps the count and the clock; the held-out splits are in a
directory the sandbox does not grant.
It writes, in the run directory:
  train.json   status, reason, the last loss and peak memory (what train.py says: the runner's
               tokens, steps and seconds are the official figures); written as soon as train()
               ends, and again after the export
  model.pt2    the returned model, exported with torch.export at the evaluation shape, in fp32
Progress (step, tokens, loss) goes to the runner through a pipe (see Run.log), never stdout.
=====================================================================================================
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

MODEL_FILE = "model.pt2"
RESULT_FILE = "train.json"
TRAIN_FILE = "train.py"
OOM_MARKERS = ("can't allocate memory", "cannot allocate memory", "out of memory", "not enough memory")


def main(spec: dict[str, Any]) -> None:
    """Run in the sandbox, by harness.procs.boot."""
    run_dir = Path(spec["run_dir"])
    if spec.get("memory_cap_mb") and not spec["device"].startswith("cuda"):
        # Address-space cap: an allocation past it fails inside this process (reported as oom)
        # instead of the kernel's OOM killer picking a victim. CUDA reserves huge address ranges,
        # so GPU runs rely on the runner's RSS polling alone.
        cap = int(spec["memory_cap_mb"]) << 20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    record: dict[str, Any] = {"status": "crash", "reason": "the training process did not finish"}
    try:
        _train(spec, run_dir, record)
    except BaseException as exc:  # every way train.py can fail is an outcome to report, not a crash of ours
        traceback.print_exc()
        record["status"], record["reason"] = _classify(exc, record.get("phase", "training"))
    finally:
        record.pop("phase", None)
        _write(run_dir, record)
        sys.stdout.flush()
        sys.stderr.flush()
    # Leave without running agent-registered atexit handlers or finalizers.
    os._exit(0)


def _train(spec: dict[str, Any], run_dir: Path, record: dict[str, Any]) -> None:
    import torch

    from harness.contract import Run

    torch.manual_seed(spec["seed"])
    device = spec["device"]

    record["phase"] = "import"
    module = _import_train(run_dir / TRAIN_FILE)
    train = getattr(module, "train", None)
    if not callable(train):
        raise TypeError("train.py defines no function train(run)")

    record["phase"] = "training"
    run = Run(feed=tuple(spec["feed_fds"]), device=device, seed=spec["seed"], vocab_size=spec["vocab_size"],
              context_len=spec["context_len"], progress_fd=spec.get("progress_fd"))  # fmt: skip
    try:
        model = train(run)
        run._trained()  # the end of training, by the runner's clock
    finally:
        record.update(last_loss=run._last_loss, peak_memory_mb=_peak_memory_mb(torch, device))
        _write(run_dir, record)

    model = getattr(model, "_orig_mod", model)  # the module inside a torch.compile wrapper
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"train() must return a torch.nn.Module, not {type(model).__name__}")
    record["phase"] = "export"
    model = model.float().eval()
    example = torch.zeros(spec["eval_batch"], spec["context_len"], dtype=torch.long, device=device)
    with torch.no_grad():
        program = torch.export.export(model, (example,), strict=False)
    torch.export.save(program, run_dir / MODEL_FILE)
    record.update(status="ok", reason="")


def _import_train(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("train", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    return module


def _classify(exc: BaseException, phase: str) -> tuple[str, str]:
    """(status, readable reason) for an exception that ended the run."""
    from harness.contract import Diverged

    text = f"{type(exc).__name__}: {exc}".strip()
    if len(text) > 600:
        text = text[:600] + " ..."
    where = _train_line(exc)
    if isinstance(exc, Diverged):
        return "diverged", str(exc)
    if isinstance(exc, MemoryError) or any(m in str(exc).lower() for m in OOM_MARKERS):
        return "oom", f"out of memory during {phase}{where}: {text}"
    if isinstance(exc, SystemExit):
        return "crash", f"train.py called exit({exc.code}) during {phase}"
    if phase == "export":
        return "crash", f"the returned model could not be exported with torch.export: {text}"
    return "crash", f"train.py raised at {phase}{where}: {text}"


def _train_line(exc: BaseException) -> str:
    """' (train.py line N)' for the deepest frame of the traceback in train.py, if any."""
    line = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).name == TRAIN_FILE:
            line = f" (train.py line {frame.lineno})"
    return line


def _peak_memory_mb(torch: Any, device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _write(run_dir: Path, record: dict[str, Any]) -> None:
    tmp = run_dir / f".{RESULT_FILE}.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, run_dir / RESULT_FILE)


if __name__ == "__main__":
    from harness.procs import boot

    boot(__name__)
