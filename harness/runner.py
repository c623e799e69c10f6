"""The runner: one experiment, start to score, as data.

`await run(source, tier, seed=..., device=...)` writes train.py into a fresh run directory,
checks it with the guard, starts the training process (harness.worker) in its own session and in
the OS sandbox (harness.jail; refused where the machine has none, unless the settings allow an
unsandboxed run, whose result is then labelled untrusted), enforces the tier's wall-clock limit and
the memory cap, kills every process of the run when training ends, then starts the evaluation
process (harness.evaluate, sandboxed too) and returns a RunResult. Every outcome, including a
cancelled run's cleanup, kills the whole run; no outcome of the experiment raises.
`run_sync` is the same for callers without an event loop. With `split="audit"` the same run is
scored on the audit split instead of the validation split (a promoted best's audit), by the same
evaluation process under the same rules.

Never does it read the score from the training process's output: stdout and stderr are the log;
the score comes through a pipe only the evaluation process holds. Every file of the run directory
was writable by agent code, so the runner opens none of them through a symbolic link.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import site
import stat
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, get_args

from pydantic import BaseModel, ConfigDict

import harness
from harness import budgets
from harness import fingerprint as fingerprints
from harness import guard as guards
from harness import jail
from harness import prepare as preparing
from harness.devices import hardware_class
from harness.errors import HarnessError
from harness.feeder import Feeder
from harness.procs import MARKER_VAR, RunProcesses, kill_run
from harness.tiers import Tier
from harness.worker import MODEL_FILE, RESULT_FILE, TRAIN_FILE
from harness.settings import HarnessSettings

Status = Literal["ok", "crash", "timeout", "diverged", "oom", "rejected", "over_budget"]
Split = Literal["val", "audit"]  # the held-out split a run is scored on: the search's, or the audit's
FAILED: tuple[str, ...] = tuple(status for status in get_args(Status) if status != "ok")
HARNESS_DIR = str(Path(harness.__file__).resolve().parent)
ROOT = str(Path(HARNESS_DIR).parent)
LOG_FILE = "train.log"
TAIL_LINES = 40
POLL_SECONDS = 0.25


class RunResult(BaseModel):
    """The outcome of one run: what events, the CLI and the board record."""

    model_config = ConfigDict(frozen=True)

    status: Status
    reason: str = ""
    val_bpb: float | None = None
    training_seconds: float | None = None  # the runner's clock: first batch served to train()'s return
    total_seconds: float = 0.0
    tokens: int | None = None  # training tokens the runner served
    steps: int | None = None  # batches the runner served
    epochs: float | None = None  # tokens / the training split's tokens: above 1, the data repeated
    tokens_per_second: float | None = None
    mfu: float | None = None  # model FLOPs utilisation (6 x params x tokens/s / the GPU's peak); None: unknown
    cpu_seconds: float | None = None  # CPU time the run's processes spent training (first batch to the end), by the runner
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
    sandbox: str = ""  # the OS sandbox's layers in force, or "none (untrusted)": see harness.jail
    split: Split = "val"  # which held-out split val_bpb is measured on ("audit": for people only, never the search)


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
    compute_budget: float | None = None,
    split: Split = "val",
) -> RunResult:
    """Run train.py `source` on `tier` and score it. Cancelling kills every process of the run.

    `notify` hears about slow set-up steps (preparing the data, downloading the corpus once);
    `guard=False` skips the static checks (tests of the defences behind it use that).
    `compute_budget`: CPU seconds of the arena's baseline run; on a token tier, a run whose
    training takes more than tier.compute_tolerance times that is over_budget (buying compute by
    reusing batches is not research). `split`: the held-out split the model is scored on. Raises
    HarnessError where the machine has no OS sandbox and the settings do not allow running without.
    """
    settings = settings or HarnessSettings()
    sandbox = "none (the sim runs no agent code)" if tier.synthetic else sandbox_layers(settings)
    started = time.perf_counter()
    root = (Path(runs_dir) if runs_dir is not None else Path(tempfile.gettempdir()) / "swarm-runs").resolve()
    run_dir = root / f"{tier.name}-s{seed}-{source_hash(source)[:8]}-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True)
    (run_dir / TRAIN_FILE).write_text(source)
    base = dict(tier=tier.name, device=device, seed=seed, synthetic=tier.synthetic, source_hash=source_hash(source),
                run_dir=str(run_dir), hardware=await asyncio.to_thread(hardware_class, device), sandbox=sandbox,
                split=split)

    def finish(**fields: Any) -> RunResult:
        result = RunResult(**base, total_seconds=time.perf_counter() - started, **fields)
        _write_new(run_dir / "result.json", result.model_dump_json(indent=1).encode())
        return result

    prepared = None
    if not tier.synthetic:
        prepared = await asyncio.to_thread(
            preparing.prepare, settings.corpus, settings.cache_dir, settings.tokenizer, notify, tier.corpus, tier.vocab_size
        )
    base["fingerprint"] = await asyncio.to_thread(fingerprints.fingerprint, prepared, tier)
    if guard:
        report = guards.check_source(source)
        if not report.ok:
            return finish(status="rejected", reason=report.reason)

    confined = not tier.synthetic and sandbox != jail.UNTRUSTED
    marker = run_dir.name  # unique per run, so tests and operators can find a run's processes
    training = await _train(run_dir, tier, seed, device, settings, prepared, marker, on_progress, confined, split)
    training.update(budgets.judge(tier, training, compute_budget))
    if training["status"] != "ok" or tier.synthetic:
        return finish(**_result_fields(training, {}, run_dir, tier.synthetic))
    evaluation = await _evaluate(run_dir, tier, device, prepared, marker, confined, split)
    fields = _result_fields(training, evaluation, run_dir, tier.synthetic)
    return finish(**fields, mfu=budgets.mfu(fields.get("params"), training.get("tokens_per_second"), base["hardware"]))


def sandbox_layers(settings: HarnessSettings) -> str:
    """The OS sandbox's layers on this machine; jail.UNTRUSTED where it has none and the settings allow it."""
    layers = jail.support()
    if not layers.startswith("error"):
        return layers
    if settings.allow_unsandboxed:
        return jail.UNTRUSTED
    raise HarnessError(
        f"this machine gives no OS sandbox to train.py ({layers.removeprefix('error: ')}), so agent code "
        "could read the validation data and change its own score. Use Linux 5.13+ with Landlock and "
        "unprivileged user namespaces, or accept untrusted results with allow_unsandboxed = true "
        "(swarm harness run --unsandboxed)"
    )


def _jail_rules(read: list[str], write: list[str], device: str, heldout: Path | None) -> dict[str, list[str]]:
    """What a sandboxed process of the run may touch; refuses rules that would expose the held-out splits."""
    rules = {"read": [*jail.python_paths(), HARNESS_DIR, *read], "write": write,
             "devices": jail.gpu_devices() if device.startswith("cuda") else []}
    if heldout is not None:
        hidden = heldout.resolve()
        for grant in (*jail.SYSTEM_READ, *rules["read"], *write):
            if hidden.is_relative_to(Path(grant).resolve()):
                raise HarnessError(f"the held-out data {hidden} lies under {grant}, which training may read; "
                                   "move the cache (cache_dir) elsewhere")
    return rules


def _private_env(tmp: str, marker: str) -> dict[str, str]:
    """The environment of a run's process: no SWARM_ settings; temporary files and caches in `tmp`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env.update({MARKER_VAR: marker, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "TMPDIR": tmp,
                "HOME": tmp, "XDG_CACHE_HOME": f"{tmp}/cache", "TORCHINDUCTOR_CACHE_DIR": f"{tmp}/inductor",
                "TRITON_CACHE_DIR": f"{tmp}/triton"})
    return env


async def _train(
    run_dir: Path, tier: Tier, seed: int, device: str, settings: HarnessSettings,
    prepared: preparing.Prepared | None, marker: str, on_progress: ProgressCallback | None, confined: bool,
    split: Split = "val",
) -> dict[str, Any]:
    """Start the training (or sim) process, watch it, kill it and all it started; its record."""
    cap = memory_cap_mb(settings)
    spec: dict[str, Any] = dict(
        run_dir=str(run_dir), runner_pid=os.getpid(), seed=seed, device=device, memory_cap_mb=cap,
        budget_tokens=tier.budget_tokens, budget_seconds=tier.budget_seconds, context_len=tier.context_len,
        eval_batch=tier.eval_batch, tier=tier.name,
    )
    tmp = tempfile.mkdtemp(prefix="swarm-jail-")  # the sandbox's private temporary directory
    if prepared is None:
        boot = f"import sys; sys.path.insert(0, {ROOT!r}); from harness.sim import main; main()"
        spec["split"] = split  # the sim's score is its evaluation: an audit draws its own noise (train.py never hears of it)
    else:
        boot = f"import sys; sys.path.insert(0, {ROOT!r}); from harness.procs import boot; boot('harness.worker')"
        rules = _jail_rules([], [str(run_dir), tmp], device, prepared.heldout) if confined else None
        spec.update(vocab_size=prepared.vocab_size, jail=rules)
    read_progress, write_progress = os.pipe()
    fds = [write_progress]
    feed = None
    if prepared is not None:
        feed = Feeder.from_file(prepared.train_path, seed, tier.budget_tokens, tier.budget_seconds)
        spec["feed_fds"] = list(feed.child_fds())
    spec["progress_fd"] = write_progress
    try:
        with open(run_dir / LOG_FILE, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-c", boot, cwd=run_dir, env=_private_env(tmp, marker),
                stdin=asyncio.subprocess.PIPE, stdout=log, stderr=log, pass_fds=fds + spec.get("feed_fds", []),
                start_new_session=True,
            )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if feed is not None:
            feed.start()
            feed.stop()
        raise
    finally:
        for fd in fds:
            os.close(fd)
    if feed is not None:
        feed.start()  # the child holds its ends now; the runner keeps only its own
    processes = RunProcesses(marker, proc.pid)
    pipe = os.fdopen(read_progress, "rb")
    reader = asyncio.create_task(_read_progress(pipe, tier, on_progress))
    outcome: dict[str, Any] = {}
    try:
        proc.stdin.write(json.dumps(spec).encode())  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        outcome = await _watch(proc, tier.train_limit_seconds, processes, cap, sample=not tier.synthetic)
    finally:
        ended = time.monotonic()
        await asyncio.shield(kill_run(processes))
        await asyncio.shield(proc.wait())
        if feed is not None:
            await asyncio.to_thread(feed.stop)
        # Every writer is dead now, so the reader reaches the end of the pipe: the last reports arrive.
        await asyncio.wait({reader}, timeout=1.0)
        reader.cancel()
        pipe.close()  # closed by the reader's transport too, unless it never started: never leak it
        shutil.rmtree(tmp, ignore_errors=True)  # compiler caches: nothing of the run is lost with them
    record = _read_json(run_dir / RESULT_FILE)
    for name in ("tokens", "steps", "training_seconds", "epochs", "tokens_per_second", "cpu_seconds", "overrun"):
        record.pop(name, None)  # train.json is agent-writable: these figures are the runner's alone
    if feed is not None:
        record.update(budgets.served(feed, ended))
        record["cpu_seconds"] = budgets.training_cpu(outcome.get("cpu_samples", []), feed.counts, ended)
    record["peak_memory_mb"] = max(record.get("peak_memory_mb") or 0.0, outcome.get("peak_rss_mb", 0.0)) or None
    if outcome.get("status"):  # the runner's own verdict (timeout, oom) overrides the process's
        record.update(status=outcome["status"], reason=outcome["reason"])
    elif "status" not in record:
        code = proc.returncode
        status = "oom" if code == -9 else "crash"
        why = " (killed by SIGKILL: the kernel's OOM killer?)" if code == -9 else ""
        record.update(status=status, reason=f"the training process exited with code {code}{why} before reporting")
    return record


async def _watch(proc: asyncio.subprocess.Process, limit: float, processes: RunProcesses, cap_mb: int,
                 sample: bool = True) -> dict[str, Any]:  # fmt: skip
    """Wait for the process; stop it at the wall-clock limit or when its run uses too much memory.

    `sample=False` (the sim tier: harness code only, a few MiB, no CPU figure to keep) reads no
    /proc at all: each sample reads every process's stat, and 64 sim runs on one machine would
    otherwise spend a core on watching each other."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    peak, samples = 0.0, [(loop.time(), 0.0)]  # (the runner's clock, CPU seconds of the run so far)
    waiter = asyncio.create_task(proc.wait())
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=POLL_SECONDS)
            if done:
                return {"peak_rss_mb": peak, "cpu_samples": samples}
            used = 0.0
            if sample:
                usage = processes.tree()
                used, peak = usage.rss_mb, max(peak, usage.rss_mb)
                samples.append((loop.time(), max(samples[-1][1], usage.cpu_seconds)))
            if used > cap_mb:
                return {"status": "oom", "reason": f"the run used {used:.0f} MiB, over the cap of {cap_mb} MiB",
                        "peak_rss_mb": peak, "cpu_samples": samples}
            if loop.time() > deadline:
                return {"status": "timeout", "reason": f"killed at the tier's limit of {limit:.0f} s",
                        "peak_rss_mb": peak, "cpu_samples": samples}
    finally:
        waiter.cancel()


async def _read_progress(pipe: Any, tier: Tier, on_progress: ProgressCallback | None) -> None:
    """Turn the pipe's JSON lines into Progress reports for `on_progress` (a view: no figure is taken from them)."""
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
            if on_progress is not None:
                on_progress(report)
    finally:
        transport.close()


async def _evaluate(
    run_dir: Path, tier: Tier, device: str, prepared: preparing.Prepared | None, marker: str, confined: bool,
    split: Split = "val",
) -> dict[str, Any]:
    """Score the exported model in a fresh isolated interpreter, outside the run directory, on `split`."""
    assert prepared is not None
    model = run_dir / MODEL_FILE
    if not (model.is_file() and not model.is_symlink()):  # a link to the held-out data is not a model
        return {"status": "crash", "reason": f"{MODEL_FILE} is missing or not a regular file"}
    tmp = tempfile.mkdtemp(prefix="swarm-jail-")
    held = prepared.audit_path if split == "audit" else prepared.val_path
    files = [str(model), str(held), str(prepared.tokenizer_path)]  # the jail grants these three files, no more
    spec = dict(model=files[0], data=files[1], split=split, tokenizer=files[2], runner_pid=os.getpid(), device=device,
                eval_batch=tier.eval_batch, context_len=tier.context_len, eval_tokens=tier.eval_tokens,
                vocab_size=prepared.vocab_size, jail=_jail_rules(files, [tmp], device, None) if confined else None)
    # -I -S: no cwd, PYTHONPATH, user site or .pth files; only the harness and site-packages.
    paths = [ROOT, *dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()])]
    boot = f"import sys; sys.path[:0] = {paths!r}; from harness.procs import boot; boot('harness.evaluate')"
    read_result, spec["result_fd"] = os.pipe()
    try:
        with os.fdopen(_create(run_dir / "eval.log"), "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", "-c", boot, cwd=tmp, env=_private_env(tmp, marker + "-eval"),
                stdin=asyncio.subprocess.PIPE, stdout=log, stderr=log, pass_fds=[spec["result_fd"]],
                start_new_session=True,
            )
    except BaseException:
        os.close(read_result)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(spec["result_fd"])  # from now on the evaluation process alone holds the write end
    reading = asyncio.ensure_future(asyncio.to_thread(_read_all, read_result))
    processes = RunProcesses(marker + "-eval", proc.pid)
    try:
        proc.stdin.write(json.dumps(spec).encode())  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        await asyncio.wait_for(proc.wait(), tier.eval_limit_seconds)
    except asyncio.TimeoutError:
        return {"status": "timeout", "reason": f"evaluation exceeded the tier's limit of {tier.eval_limit_seconds:.0f} s"}
    finally:
        await asyncio.shield(kill_run(processes, grace=0.5))
        await asyncio.shield(proc.wait())
        out = await asyncio.shield(reading)  # the end of the pipe: every holder of the write end is dead
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        result = json.loads(out)
        if isinstance(result, dict) and "status" in result:
            return result
    except ValueError:
        pass
    return {"status": "crash", "reason": f"the evaluation process exited with code {proc.returncode} without a result"}


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read()


def _result_fields(training: dict[str, Any], evaluation: dict[str, Any], run_dir: Path, synthetic: bool) -> dict[str, Any]:
    fields = {key: training.get(key) for key in ("training_seconds", "tokens", "steps", "peak_memory_mb", "epochs",
                                                 "tokens_per_second", "cpu_seconds")}  # fmt: skip
    fields.update(status=training["status"], reason=training.get("reason", ""))
    if synthetic:  # the sim process runs no agent code, so its record is the score
        fields.update(val_bpb=training.get("val_bpb"), params=training.get("params"))
    if evaluation:
        fields.update(status=evaluation["status"], reason=evaluation.get("reason", ""), params=evaluation.get("params"))
        fields["val_bpb"] = evaluation.get("val_bpb")
    fields["log_tail"] = _tail(run_dir / LOG_FILE) + (("\n" + _tail(run_dir / "eval.log")) if (run_dir / "eval.log").exists() else "")
    return fields


def _read_regular(path: Path) -> bytes | None:
    """The file's bytes if it is a regular file, never through a link (a link to the held-out data
    would copy it into the result, which agents read); None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read() if stat.S_ISREG(os.fstat(fd).st_mode) else None


def _create(path: Path) -> int:
    """A new file at `path` for writing, replacing whatever agent code left there, link or not."""
    path.unlink(missing_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)


def _write_new(path: Path, data: bytes) -> None:
    with os.fdopen(_create(path), "wb") as handle:
        handle.write(data)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(_read_regular(path) or b"")
        return value if isinstance(value, dict) else {}
    except ValueError:
        return {}


def _tail(path: Path) -> str:
    lines = (_read_regular(path) or b"").decode(errors="replace").splitlines()
    return "\n".join(lines[-TAIL_LINES:])
