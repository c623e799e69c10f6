"""Benchmark the swarm at scale: how busy N simulated devices are, where their idle time goes, and
what each component costs in CPU, beside Optuna's workers on the same synthetic objective.

For each N a real swarm starts the way `swarm up --tier sim --devices cpu*N` starts it (swarm.up's
Head, Swarm and Supervisor: the bundled nats-server, the blackboard service, ideators, N
implementers, a reviewer and a replicator, each its own process), runs for a warm-up (until every
slot has started a run, at most WARMUP_CAP seconds), is measured for --minutes, then drains. The
figures come from the board's projection (board.duckdb: runs, claims, work, hypotheses, patches,
every timestamp from the events) and from /proc/<pid>/stat of every process at the window's ends:

- runs/min: runs finished in the window per minute, against the ideal N * 60 / D;
- busy: the share of the window's device-seconds covered by a run;
- idle gap: per slot, from one run's end to the next run's start (p50, p90, max); a slot that never
  starts again before the window ends counts its gap up to the window's end;
- where the idle goes, per gap, along the next run's life: before its hypothesis was approved
  ("idea"), before its replication work was queued ("review"), approved but not yet granted to the
  agent ("claim"), granted but its patch not yet submitted ("implement": the brain and the
  pre-flight, CPU), submitted but not yet started ("start": the agent loop and process start, CPU);
- CPU seconds per run of the service, each role, nats-server and the run processes (the sim
  children, reaped by their agents) and of an idle agent per minute (a separate short phase: the
  run budget spent, nothing to do).

Optuna: N worker processes share a JournalStorage (JournalFileBackend) study, each asking TPE for
the knobs of harness/train.py, scoring them with harness.sim.loss and holding its "device" for D
seconds, for the same window. Times measured on a loaded machine are inflated; CPU-seconds less so.

    python scripts/bench_scale.py                                  # N = 1,4,16,64, runs of 10 s
    python scripts/bench_scale.py --devices 4,16 --minutes 1 --no-optuna
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.arena import describe  # noqa: E402
from harness import sim  # noqa: E402
from harness.devices import slots  # noqa: E402
from harness.knobs import read as read_knobs  # noqa: E402
from harness.procs import TICKS  # noqa: E402
from roles import ROLES  # noqa: E402
from swarm.ground.errors import BoardError  # noqa: E402
from swarm.ground.settings import Settings  # noqa: E402
from swarm.head import Head, HeadOptions  # noqa: E402
from swarm.up import Swarm, connect_watcher  # noqa: E402

WARMUP_CAP = 120.0  # seconds to wait for every slot's first run before the window opens anyway
IDLE_SECONDS = 30.0  # how long the idle phase measures agents that have nothing to do
CAUSES = ("idea", "review", "claim", "implement", "start", "open")  # "open": the window ended first


@dataclass
class Figures:
    label: str
    n: int
    seconds: float
    window: float
    runs: int
    busy: float
    gaps: list[float]
    causes: dict[str, float] = field(default_factory=dict)  # cause -> idle seconds, all slots together
    cpu: dict[str, float] = field(default_factory=dict)  # component -> CPU seconds in the window
    extra: str = ""
    board: str = ""  # the stream's rate and the projection's size


def proc_times(pid: int) -> tuple[float, float]:
    """(own CPU, reaped children's CPU) seconds of `pid`, from /proc/<pid>/stat; zeros once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS, (int(fields[13]) + int(fields[14])) / TICKS


def component(name: str) -> str:
    """'implementer-12@host' -> 'implementer'; 'service' stays."""
    return name.split("@", 1)[0].rsplit("-", 1)[0] if "@" in name else name


def snapshot(swarm: Swarm) -> dict[str, float]:
    """CPU seconds so far per component: each role, the service, nats-server, and the runs the agents reaped."""
    out: dict[str, float] = {}
    for child in swarm.supervisor.children.values():
        if child.process is None:
            continue
        own, reaped = proc_times(child.process.pid)
        key = component(child.name)
        out[key] = out.get(key, 0.0) + own
        out["runs"] = out.get("runs", 0.0) + reaped
    for server in swarm.head.servers if swarm.head else []:
        if server.process is not None:
            out["nats-server"] = out.get("nats-server", 0.0) + proc_times(server.process.pid)[0]
    return out


def settings_for(folder: Path, seconds: float, overrides: dict[str, Any] | None = None) -> Settings:
    return Settings.load(overrides={"dir": folder, "harness.tier": "sim", "harness.sim_seconds": seconds,
                                    "brain.kind": "offline", **(overrides or {})})  # fmt: skip


async def start(settings: Settings, devices: list[str]) -> tuple[Swarm, Any]:
    """A head and a node on this machine, started as `swarm up` starts them; and a watcher of its board."""
    swarm = Swarm(settings, devices, tuple(ROLES), head=Head(settings, HeadOptions()))
    arena = await asyncio.to_thread(describe, settings.harness.tier, devices[0], settings.harness)
    swarm.rungs = {arena.tier: arena.fingerprint}
    await swarm.start_head(arena)
    watcher = await connect_watcher(swarm.url, swarm.credentials)
    swarm.start_node()
    return swarm, watcher


async def stop(swarm: Swarm, watcher: Any, supervising: asyncio.Task[None]) -> None:
    supervising.cancel()
    await asyncio.gather(supervising, return_exceptions=True)
    await swarm.stop_agents()
    await watcher.bus.close()
    await swarm.stop_services()


async def measure_swarm(n: int, seconds: float, minutes: float, folder: Path, ideators: int | None) -> Figures:
    overrides = {"agents.ideators": ideators} if ideators else {}
    settings = settings_for(folder, seconds, overrides)
    devices = slots(f"cpu*{n}")
    began = time.time()
    swarm, watcher = await start(settings, devices)
    supervising = asyncio.create_task(swarm.supervisor.watch())
    try:
        while time.time() - began < WARMUP_CAP:
            try:
                if (await watcher.board.query("SELECT count(DISTINCT device) FROM runs"))["rows"][0][0] >= n:
                    break
            except BoardError:
                pass  # the service is still starting
            await asyncio.sleep(1.0)
        t0, cpu0 = time.time(), snapshot(swarm)
        await asyncio.sleep(minutes * 60)
        t1, cpu1 = time.time(), snapshot(swarm)
    finally:
        await stop(swarm, watcher, supervising)
    figures = analyse(folder / "board.duckdb", devices, t0, t1)
    figures.label, figures.n, figures.seconds = "swarm", n, seconds
    figures.cpu = {key: cpu1.get(key, 0.0) - cpu0.get(key, 0.0) for key in cpu1}
    figures.extra = f"warm-up {t0 - began:.0f} s"
    return figures


def analyse(db: Path, devices: list[str], t0: float, t1: float) -> Figures:
    """Runs, busy share, gaps and their causes in the window [t0, t1], from the board's projection."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("""
        SELECT r.device, epoch(r.started_at), epoch(r.finished_at), w.work_kind, epoch(w.queued_at),
               epoch(h.decided_at),
               (SELECT max(epoch(c.granted_at)) FROM claims c WHERE c.work = r.work AND c.agent = r.agent
                AND c.granted_at <= r.started_at),
               epoch(p.submitted_at)
        FROM runs r LEFT JOIN work w ON w.work = r.work LEFT JOIN patches p ON p.patch = r.patch
        LEFT JOIN hypotheses h ON h.hypothesis = p.hypothesis
        WHERE r.started_at IS NOT NULL ORDER BY r.device, r.started_at""").fetchall()  # fmt: skip
    events = con.execute("SELECT count(*) FROM events WHERE epoch(happened_at) BETWEEN ? AND ?", [t0, t1]).fetchone()[0]
    total = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    con.close()
    size = db.stat().st_size + sum(f.stat().st_size for f in db.parent.glob(db.name + ".wal"))
    per: dict[str, list[tuple[Any, ...]]] = {d: [] for d in devices}
    for row in rows:
        per.setdefault(row[0], []).append(row)
    busy, gaps, runs = 0.0, [], 0
    causes = dict.fromkeys(CAUSES, 0.0)
    for device in devices:
        mine = per.get(device, [])
        runs += sum(1 for r in mine if r[2] is not None and t0 <= r[2] <= t1)
        busy += sum(max(0.0, min(r[2] or t1, t1) - max(r[1], t0)) for r in mine)
        ends = [(r[2], nxt) for r, nxt in zip(mine, [*mine[1:], None]) if r[2] is not None]
        for end, nxt in ends:
            stop_at = nxt[1] if nxt is not None else t1
            if stop_at < t0 or end > t1:
                continue
            lo, hi = max(end, t0), min(stop_at, t1)
            gaps.append(stop_at - end)
            if nxt is None or nxt[1] > t1:
                causes["open"] += hi - lo
                continue
            _, _, _, kind, queued, approved, granted, submitted = nxt
            ready = approved if kind == "implement" else queued
            marks = [(ready, "idea" if kind == "implement" else "review"), (granted, "claim"),
                     (submitted if kind == "implement" else granted, "implement"), (nxt[1], "start")]  # fmt: skip
            at = lo
            for mark, cause in marks:
                if mark is None:
                    continue
                upto = min(max(mark, at), hi)
                causes[cause] += upto - at
                at = upto
    figures = Figures("", len(devices), 0.0, t1 - t0, runs, busy / (len(devices) * (t1 - t0)), gaps, causes)
    figures.board = f"{events / max(runs, 1):.1f} events per run ({events / (t1 - t0):.1f}/s); board.duckdb {size / 2**10 / max(total, 1):.0f} KiB per run ({total} runs)"
    return figures


async def measure_idle(seconds: float, folder: Path) -> dict[str, float]:
    """CPU seconds per minute of each role's agent once the run budget is spent and nothing is left to do."""
    settings = settings_for(folder, seconds, {"board.max_runs": 1})
    swarm, watcher = await start(settings, slots("cpu*2"))
    supervising = asyncio.create_task(swarm.supervisor.watch())
    try:
        deadline = time.time() + WARMUP_CAP
        while time.time() < deadline:
            await watcher.refresh()
            if watcher.budget_spent() and not watcher.reviews_pending():
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(5.0)  # the last releases and proposals settle
        cpu0, t0 = snapshot(swarm), time.time()
        await asyncio.sleep(IDLE_SECONDS)
        cpu1, t1 = snapshot(swarm), time.time()
    finally:
        await stop(swarm, watcher, supervising)
    counts: dict[str, int] = {}
    for name in swarm.supervisor.children:
        counts[component(name)] = counts.get(component(name), 0) + 1
    return {key: (cpu1[key] - cpu0.get(key, 0.0)) / counts.get(key, 1) * 60 / (t1 - t0)
            for key in cpu1 if key != "runs"}  # fmt: skip


# Optuna's workers on the same objective -------------------------------------------------------


def flat(knobs: dict[str, Any]) -> dict[str, float]:
    """The numeric knobs, tuples spread as NAME[i] (harness.sim's view)."""
    out: dict[str, float] = {}
    for name, value in knobs.items():
        out.update(sim._numeric(name, value))
    return out


def rebuild(baseline: dict[str, Any], values: dict[str, float]) -> dict[str, Any]:
    """The baseline's knobs with the numbers in `values` put back (tuples included)."""

    def put(name: str, value: Any) -> Any:
        if isinstance(value, bool) or isinstance(value, str):
            return value
        if isinstance(value, tuple):
            return tuple(put(f"{name}[{i}]", item) for i, item in enumerate(value))
        return values.get(name, value)

    return {name: put(name, value) for name, value in baseline.items()}


def optuna_worker(path: str, seconds: float, window: float, ready: Any, seed: int, out: str) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(path))
    study = optuna.load_study(study_name="bench", storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True))  # fmt: skip
    baseline = read_knobs(sim.BASELINE.read_text())
    base = flat(baseline)
    spans: list[tuple[float, float]] = []
    ready.wait()  # every worker has imported optuna and opened the study: the window opens
    end_at, cpu0 = time.time() + window, time.process_time()
    while time.time() < end_at:
        trial = study.ask()
        values = {k: trial.suggest_float(k, b / 4, b * 4, log=True) if b > 0 else trial.suggest_float(k, 0.0, 0.2)
                  for k, b in base.items()}  # fmt: skip
        try:
            value = sim.loss(rebuild(baseline, values), baseline) + random.gauss(0.0, sim.NOISE)
        except (sim.SimError, ArithmeticError):
            value = math.inf
        began = time.time()
        time.sleep(seconds)  # the device trains
        spans.append((began, time.time()))
        if math.isfinite(value):
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    Path(out).write_text(json.dumps({"spans": spans, "cpu": time.process_time() - cpu0}))


def measure_optuna(n: int, seconds: float, minutes: float, folder: Path) -> Figures:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    folder.mkdir(parents=True, exist_ok=True)
    path = str(folder / "journal.log")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="bench", storage=JournalStorage(JournalFileBackend(path)), direction="minimize")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(n + 1)
    workers = [ctx.Process(target=optuna_worker, args=(path, seconds, minutes * 60, ready, i, str(folder / f"w{i}.json")))
               for i in range(n)]  # fmt: skip
    for worker in workers:
        worker.start()
    ready.wait()
    t0 = time.time()
    t1 = t0 + minutes * 60
    for worker in workers:
        worker.join()
    results = [json.loads((folder / f"w{i}.json").read_text()) for i in range(n)]
    busy, gaps, runs = 0.0, [], 0
    for result in results:
        spans = result["spans"]
        runs += sum(1 for _, end in spans if t0 <= end <= t1)
        busy += sum(max(0.0, min(end, t1) - max(begin, t0)) for begin, end in spans)
        gaps += [nxt[0] - cur[1] for cur, nxt in zip(spans, spans[1:]) if t0 <= nxt[0] <= t1]
    figures = Figures("optuna", n, seconds, t1 - t0, runs, busy / (n * (t1 - t0)), gaps)
    figures.cpu = {"workers": sum(r["cpu"] for r in results)}
    return figures


# Report --------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def print_figures(f: Figures) -> None:
    ideal = f.n * 60 / f.seconds
    rate = f.runs / (f.window / 60)
    print(f"{f.label:6} N={f.n:<3} runs/min {rate:6.1f} of {ideal:6.1f} ({rate / ideal:6.1%})  busy {f.busy:6.1%}  "
          f"gap p50 {quantile(f.gaps, 0.5):6.2f} s p90 {quantile(f.gaps, 0.9):6.2f} s max {max(f.gaps, default=math.nan):6.2f} s"
          f"  ({f.runs} runs in {f.window:.0f} s{', ' + f.extra if f.extra else ''})")  # fmt: skip
    idle = sum(f.causes.values())
    if idle:
        print("        idle goes to: " + ", ".join(f"{c} {s / idle:.0%}" for c, s in f.causes.items() if s > 0)
              + f" (of {idle:.0f} slot-seconds)")  # fmt: skip
    if f.runs:
        total = sum(f.cpu.values())
        parts = ", ".join(f"{k} {v / f.runs:.3f}" for k, v in sorted(f.cpu.items(), key=lambda kv: -kv[1]) if v > 0)
        print(f"        CPU s per run: {total / f.runs:.3f} ({parts}); CPU busy {total / f.window / os.cpu_count():.0%}"
              f" of {os.cpu_count()} cores")  # fmt: skip
    if f.board:
        print(f"        {f.board}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1,4,16,64", help="the numbers of simulated devices, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration D of each sim run")
    parser.add_argument("--minutes", type=float, default=1.5, help="the measured window per N (each side)")
    parser.add_argument("--ideators", type=int, default=None, help="ideator agents [default: the settings']")
    parser.add_argument("--no-optuna", action="store_true", help="skip Optuna's side")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-agent phase")
    args = parser.parse_args()
    counts = [int(x) for x in args.devices.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"sim runs of {args.seconds:.0f} s, windows of {args.minutes:.1f} min, {os.cpu_count()} cores, logs in {work}")
    for n in counts:
        print_figures(asyncio.run(measure_swarm(n, args.seconds, args.minutes, work / f"swarm-{n}", args.ideators)))
        if not args.no_optuna:
            print_figures(measure_optuna(n, args.seconds, args.minutes, work / f"optuna-{n}"))
    if not args.no_idle:
        idle = asyncio.run(measure_idle(args.seconds, work / "idle"))
        print("idle agent, CPU s per minute: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(idle.items())))


if __name__ == "__main__":
    main()
