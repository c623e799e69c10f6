"""The runner: one experiment, start to score, as data.

`await run(source, tier, seed=..., device=...)` writes train.py into a fresh run directory,
checks it with the guard, starts the training process (harness.worker) in its own session with a
unique marker in its environment, enforces the tier's wall-clock limit and the memory cap, kills
every process of the run when training ends, then starts the evaluation process (harness.evaluate)
and returns a RunResult. Every outcome, including a cancelled run's cleanup, kills the whole run;
no outcome of the experiment raises. `run_sync` is the same for callers without an event loop.

Never does it read the score from the training process's output: stdout and stderr are the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import site
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict

import harness
from harness import corpora
from harness import fingerprint as fingerprints
from harness import guard as guards
from harness import prepare as preparing
from harness.devices import hardware_class
from harness.procs import MARKER_VAR, kill_run, marked_pids, rss_mb
from harness.tiers import Tier
from harness.worker import MODEL_FILE, RESULT_FILE, TRAIN_FILE
from harness.settings import HarnessSettings

Status = Literal["ok", "crash", "timeout", "diverged", "oom", "rejected"]
ROOT = str(Path(harness.__file__).resolve().parent.parent)
LOG_FILE = "train.log"
TAIL_LINES = 40
POLL_SECONDS = 0.25


class RunResult(BaseModel):
    """The outcome of one run: what events, the CLI and the board record."""

    model_config = ConfigDict(frozen=True)

    status: Status
    reason: str = ""
    val_bpb: float | None = None
    training_seconds: float | None = None
    total_seconds: float = 0.0
    tokens: int | None = None
    steps: int | None = None
    params: int | None = None
    peak_memory_mb: float | None = None
    tier: str
    device: str
    hardware: str
    seed: int
    fingerprint: str
    synthetic: bool = False
    source_hash: str  # sha256 of the raw source as run (not the board's normalised code_hash)
    run_dir: str
    log_tail: str = ""


@dataclass(frozen=True)
class Progress:
    """One progress report from a running train.py (see Run.log)."""

    step: int
    tokens: int
    loss: float
    elapsed: float
    budget_tokens: int | None
    budget_seconds: float | None


ProgressCallback = Callable[[Progress], None]


def source_hash(source: str) -> str:
    """sha256 hex of the source exactly as given: which bytes were run."""
    return hashlib.sha256(source.encode()).hexdigest()


def memory_cap_mb(settings: HarnessSettings) -> int:
    """The cap from the settings, else half of this machine's memory."""
    if settings.memory_cap_mb is not None:
        return settings.memory_cap_mb
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 / 2)


def run_sync(source: str, tier: Tier, **kwargs: Any) -> RunResult:
    return asyncio.run(run(source, tier, **kwargs))


async def run(
    source: str,
    tier: Tier,
    *,
    seed: int = 0,
    device: str = "cpu",
    settings: HarnessSettings | None = None,
    runs_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
    notify: Callable[[str], None] | None = None,
    guard: bool = True,
) -> RunResult:
    """Run train.py `source` on `tier` and score it. Cancelling kills every process of the run.

    `notify` hears about slow set-up steps (preparing the data, downloading the corpus once);
    `guard=False` skips the static checks (tests of the defences behind it use that).
    """
    settings = settings or HarnessSettings()
    started = time.perf_counter()
    root = (Path(runs_dir) if runs_dir is not None else Path(tempfile.gettempdir()) / "swarm-runs").resolve()
    run_dir = root / f"{tier.name}-s{seed}-{source_hash(source)[:8]}-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True)
    (run_dir / TRAIN_FILE).write_text(source)
    base = dict(tier=tier.name, device=device, seed=seed, synthetic=tier.synthetic, source_hash=source_hash(source),
                run_dir=str(run_dir), hardware=await asyncio.to_thread(hardware_class, device))

    def finish(**fields: Any) -> RunResult:
        result = RunResult(**base, total_seconds=time.perf_counter() - started, **fields)
        (run_dir / "result.json").write_text(result.model_dump_json(indent=1))
        return result

    prepared = None
    if not tier.synthetic:
        prepared = await asyncio.to_thread(
            preparing.prepare, settings.corpus, settings.cache_dir, settings.tokenizer, notify, tier.corpus
        )
    base["fingerprint"] = await asyncio.to_thread(fingerprints.fingerprint, prepared, tier)
    if guard:
        report = guards.check_source(source)
        if not report.ok:
            return finish(status="rejected", reason=report.reason)

    marker = run_dir.name  # unique per run, so tests and operators can find a run's processes
    training = await _train(run_dir, tier, seed, device, settings, prepared, marker, on_progress)
    if training["status"] != "ok" or tier.synthetic:
        return finish(**_result_fields(training, {}, run_dir, tier.synthetic))
    evaluation = await _evaluate(run_dir, tier, device, prepared, marker)
    return finish(**_result_fields(training, evaluation, run_dir, tier.synthetic))


async def _train(
    run_dir: Path, tier: Tier, seed: int, device: str, settings: HarnessSettings,
    prepared: preparing.Prepared | None, marker: str, on_progress: ProgressCallback | None,
) -> dict[str, Any]:
    """Start the training (or sim) process, watch it, kill it and all it started; its record."""
    cap = memory_cap_mb(settings)
    spec: dict[str, Any] = dict(
        run_dir=str(run_dir), runner_pid=os.getpid(), seed=seed, device=device, memory_cap_mb=cap,
        budget_tokens=tier.budget_tokens, budget_seconds=tier.budget_seconds, context_len=tier.context_len,
        eval_batch=tier.eval_batch, tier=tier.name,
    )
    read_progress, write_progress = os.pipe()
    fds = [write_progress]
    if prepared is None:
        module = "harness.sim"
    else:
        module = "harness.worker"
        data_fd = os.open(prepared.train_path, os.O_RDONLY)
        fds.append(data_fd)
        deny = [settings.cache_dir, prepared.dir, *_corpus_root(settings.corpus)]
        spec.update(data_fd=data_fd, vocab_size=prepared.vocab_size, deny=[str(p) for p in deny])
    spec["progress_fd"] = write_progress
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env.update({MARKER_VAR: marker, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"})
    boot = f"import sys; sys.path.insert(0, {ROOT!r}); from {module} import main; main()"
    with open(run_dir / LOG_FILE, "wb") as log:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-c", boot, cwd=run_dir, env=env, stdin=asyncio.subprocess.PIPE,
                stdout=log, stderr=log, pass_fds=fds, start_new_session=True,
            )
        finally:
            for fd in fds:
                os.close(fd)
    pipe = os.fdopen(read_progress, "rb")
    last: list[Progress] = []
    reader = asyncio.create_task(_read_progress(pipe, tier, on_progress, last))
    outcome: dict[str, Any] = {}
    try:
        proc.stdin.write(json.dumps(spec).encode())  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        outcome = await _watch(proc, tier.train_limit_seconds, marker, cap)
    finally:
        await asyncio.shield(kill_run(proc.pid, marker))
        await asyncio.shield(proc.wait())
        # Every writer is dead now, so the reader reaches the end of the pipe: the last reports arrive.
        await asyncio.wait({reader}, timeout=1.0)
        reader.cancel()
        pipe.close()  # closed by the reader's transport too, unless it never started: never leak it
    record = _read_json(run_dir / RESULT_FILE)
    if "tokens" not in record and last:  # killed mid-training: the last progress report is all we have
        record.update(tokens=last[-1].tokens, steps=last[-1].step + 1, training_seconds=last[-1].elapsed)
    record["peak_memory_mb"] = max(record.get("peak_memory_mb") or 0.0, outcome.get("peak_rss_mb", 0.0)) or None
    if outcome.get("status"):  # the runner's own verdict (timeout, oom) overrides the process's
        record.update(status=outcome["status"], reason=outcome["reason"])
    elif "status" not in record:
        code = proc.returncode
        status = "oom" if code == -9 else "crash"
        why = " (killed by SIGKILL: the kernel's OOM killer?)" if code == -9 else ""
        record.update(status=status, reason=f"the training process exited with code {code}{why} before reporting")
    return record


async def _watch(proc: asyncio.subprocess.Process, limit: float, marker: str, cap_mb: int) -> dict[str, Any]:
    """Wait for the process; stop it at the wall-clock limit or when its run uses too much memory."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    peak = 0.0
    waiter = asyncio.create_task(proc.wait())
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=POLL_SECONDS)
            if done:
                return {"peak_rss_mb": peak}
            used = rss_mb(marked_pids(marker))
            peak = max(peak, used)
            if used > cap_mb:
                return {"status": "oom", "reason": f"the run used {used:.0f} MiB, over the cap of {cap_mb} MiB",
                        "peak_rss_mb": peak}
            if loop.time() > deadline:
                return {"status": "timeout", "reason": f"killed at the tier's limit of {limit:.0f} s", "peak_rss_mb": peak}
    finally:
        waiter.cancel()


async def _read_progress(pipe: Any, tier: Tier, on_progress: ProgressCallback | None, last: list[Progress]) -> None:
    """Turn the pipe's JSON lines into Progress reports; keep the latest in `last`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while line := await reader.readline():
            try:
                item = json.loads(line)
                report = Progress(int(item["step"]), int(item["tokens"]), float(item["loss"]), float(item["elapsed"]),
                                  tier.budget_tokens, tier.budget_seconds)
            except (ValueError, KeyError, TypeError):
                continue  # the pipe is writable by agent code: ignore what does not parse
            last[:] = [report]
            if on_progress is not None:
                on_progress(report)
    finally:
        transport.close()


async def _evaluate(run_dir: Path, tier: Tier, device: str, prepared: preparing.Prepared | None, marker: str) -> dict[str, Any]:
    """Score the exported model in a fresh isolated interpreter, outside the run directory."""
    assert prepared is not None
    spec = dict(model=str(run_dir / MODEL_FILE), val=str(prepared.val_path), tokenizer=str(prepared.tokenizer_path),
                runner_pid=os.getpid(), device=device, eval_batch=tier.eval_batch, context_len=tier.context_len,
                eval_tokens=tier.eval_tokens, vocab_size=prepared.vocab_size)
    # -I -S: no cwd, PYTHONPATH, user site or .pth files; only the harness and site-packages.
    paths = [ROOT, *dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()])]
    boot = f"import sys; sys.path[:0] = {paths!r}; from harness.evaluate import main; main()"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env[MARKER_VAR] = marker + "-eval"
    with open(run_dir / "eval.log", "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", boot, cwd=tempfile.gettempdir(), env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True,
        )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(json.dumps(spec).encode()), tier.eval_limit_seconds)
    except asyncio.TimeoutError:
        return {"status": "timeout", "reason": f"evaluation exceeded the tier's limit of {tier.eval_limit_seconds:.0f} s"}
    finally:
        await asyncio.shield(kill_run(proc.pid, marker + "-eval", grace=0.5))
        await asyncio.shield(proc.wait())
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"status": "crash", "reason": f"the evaluation process exited with code {proc.returncode} without a result"}


def _result_fields(training: dict[str, Any], evaluation: dict[str, Any], run_dir: Path, synthetic: bool) -> dict[str, Any]:
    fields = {key: training.get(key) for key in ("training_seconds", "tokens", "steps", "peak_memory_mb")}
    fields.update(status=training["status"], reason=training.get("reason", ""))
    if synthetic:  # the sim process runs no agent code, so its record is the score
        fields.update(val_bpb=training.get("val_bpb"), params=training.get("params"))
    if evaluation:
        fields.update(status=evaluation["status"], reason=evaluation.get("reason", ""), params=evaluation.get("params"))
        fields["val_bpb"] = evaluation.get("val_bpb")
    fields["log_tail"] = _tail(run_dir / LOG_FILE) + (("\n" + _tail(run_dir / "eval.log")) if (run_dir / "eval.log").is_file() else "")
    return fields


def _corpus_root(corpus: str) -> list[str]:
    """The user's data to hide from train.py: the path, or a glob's directory part."""
    if corpus == "default" or corpus in corpora.BUILTIN:
        return []
    fixed = Path(corpus.split("*")[0].split("?")[0].split("[")[0]).expanduser()
    return [str(fixed if fixed.exists() else fixed.parent)]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-TAIL_LINES:])
