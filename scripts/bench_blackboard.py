"""Benchmark the blackboard: claims per second and claim latency with 1, 8 and 64 concurrent
clients beside Optuna's journal storage, and history query latency with 1,000,000 runs on the board.

Everything is real: a nats-server (JetStream synced on every write, then again with the writing left
to the OS as Optuna's journal file leaves it: `nats.fsync = false`), a `swarm service` process,
clients in other processes. A claim here is a full cycle's first half: the client asks, the
service decides, publishes ClaimGranted (fsynced), sees it back from the stream and replies; the
client then releases the work back to the pool (a second decision), so a small pool serves the
whole run. Each level is measured twice: a claim request then a release request (two round trips
and two events a cycle), and a release that hands over the next claim (`Board.release_and_claim`, as
a replicator does: one request, one event, a grant that carries the release; the latency is that
request's).

Optuna's equivalent of a claim is what its worker does to get its next trial: `study.ask()` on a
JournalStorage over a JournalFileBackend (file lock, fsync-free appends), then `tell` to finish it;
its workers are processes, 1 or 64 of them.

    python scripts/bench_blackboard.py                 # the figures quoted in the notes
    python scripts/bench_blackboard.py --seconds 5 --runs 0          # claims only, about a minute
    python scripts/bench_blackboard.py --seconds 5 --runs 0 --clients 64 --no-optuna
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import multiprocessing.synchronize
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blackboard import bulk  # noqa: E402
from blackboard.client import Board  # noqa: E402
from blackboard.events import ArenaOpened, HypothesisProposed, new_id  # noqa: E402
from blackboard.projection import Projection  # noqa: E402
from blackboard.rules import code_hash  # noqa: E402
from roles import ROLES  # noqa: E402
from swarm.ground import aio  # noqa: E402
from swarm.ground.bus import Bus  # noqa: E402
from swarm.natsserver import NatsServer  # noqa: E402
from optuna.storages import JournalStorage  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402

ARENA = "bench/cpu/000000000000"
POOL = 256  # pieces of work, claimed and released over and over


def start_service(url: str, db: Path, log: Path, profile: Path | None = None) -> subprocess.Popen[bytes]:
    """A `swarm service` process; under cProfile (its stats written to `profile` when it stops) if asked."""
    env = {**os.environ, "SWARM_BOARD__LEASE_SECONDS": "60", "SWARM_BOARD__MAX_CLAIMS_PER_AGENT": "4"}
    python = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
    return subprocess.Popen([*python, "-m", "swarm", "service", "--url", url, "--db", str(db), "--instance", "bench"],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)  # fmt: skip


async def fill_pool(url: str) -> None:
    bus = await Bus.connect(url, name="bench-setup", wait=30)
    board = Board(bus, agent="bench-setup", retry_seconds=60)
    await bus.ensure_stream()
    code = "LR = 0.01\n"
    await board.publish(ArenaOpened(by="bench", arena=ARENA, baseline_patch="p-base-bench", fingerprint="0" * 16,
                                    tier="bench", hardware="cpu", baseline_code=code, baseline_hash=code_hash(code)))  # fmt: skip
    for i in range(POOL):
        await board.publish(HypothesisProposed(by="bench", hypothesis=new_id("h"), arena=ARENA, title=f"idea {i}",
                                               intent={"knobs": {"LR": 0.001 * (i + 1)}}))  # fmt: skip
    while (await board.stats())["service"]["queues"].get("implement", 0) < POOL:
        await asyncio.sleep(0.2)
    await bus.close()


async def claimers(url: str, tasks: int, seconds: float, proc: int, handover: bool) -> list[float]:
    """`tasks` concurrent clients claiming and releasing for `seconds`; their claim latencies."""
    bus = await Bus.connect(url, name=f"bench-{proc}", wait=30)
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def client(i: int) -> None:
        board = Board(bus, agent=f"client-{proc}-{i}-{handover}", retry_seconds=30)
        claim = None
        while time.monotonic() < stop:
            started = time.perf_counter()
            if claim is not None and handover:
                claim = await board.release_and_claim(claim.claim, False, "bench", ["implement"], [ARENA], wait=1)
            else:
                if claim is not None:
                    await board.release(claim.claim, done=False, reason="bench")
                    started = time.perf_counter()
                claim = await board.claim(["implement"], [ARENA], wait=1)
            if claim is not None:
                latencies.append(time.perf_counter() - started)
        if claim is not None:
            await board.release(claim.claim, done=False, reason="bench")

    await asyncio.gather(*(client(i) for i in range(tasks)))
    await bus.close()
    return latencies


def claimer_process(url: str, tasks: int, seconds: float, proc: int, handover: bool, out: multiprocessing.Queue) -> None:
    started = time.process_time()
    latencies = aio.run(lambda: claimers(url, tasks, seconds, proc, handover))  # on uvloop, as an agent runs
    out.put((latencies, time.process_time() - started))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(clients: int, latencies: list[float], seconds: float) -> dict[str, float]:
    latencies.sort()
    if not latencies:
        return {"clients": clients, "claims_per_s": 0.0, "p50_ms": math.nan, "p99_ms": math.nan}
    return {"clients": clients, "claims_per_s": len(latencies) / seconds,
            "p50_ms": 1e3 * statistics.median(latencies), "p99_ms": 1e3 * latencies[int(0.99 * (len(latencies) - 1))]}  # fmt: skip


def bench_claims(url: str, clients: int, seconds: float, service: int, server: int, handover: bool) -> dict[str, float]:
    """`clients` claiming at once from up to 4 processes; the claim rate and latency, and the CPU time
    per claim of the service, of nats-server and of the clients (what a loaded machine inflates least)."""
    processes = min(clients, 4)
    cpu = cpu_seconds(service), cpu_seconds(server)
    out: multiprocessing.Queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=claimer_process, args=(url, clients // processes + (i < clients % processes),
                                                                     seconds, i, handover, out)) for i in range(processes)]  # fmt: skip
    for worker in workers:
        worker.start()
    results = [out.get() for _ in workers]
    for worker in workers:
        worker.join()
    row = summary(clients, [x for latencies, _ in results for x in latencies], seconds)
    claims = max(1.0, row["claims_per_s"] * seconds)
    row["service_ms"] = 1e3 * (cpu_seconds(service) - cpu[0]) / claims
    row["server_ms"] = 1e3 * (cpu_seconds(server) - cpu[1]) / claims
    row["clients_ms"] = 1e3 * sum(used for _, used in results) / claims
    return row


def optuna_worker(path: str, seconds: float, start: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    """One Optuna worker process: ask for the next trial and tell its result, for `seconds`; its ask latencies."""
    study = optuna.load_study(study_name="bench", storage=JournalStorage(JournalFileBackend(path)),
                              sampler=optuna.samplers.RandomSampler(seed=0))  # fmt: skip
    latencies: list[float] = []
    start.wait()
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        started = time.perf_counter()
        trial = study.ask()
        latencies.append(time.perf_counter() - started)
        study.tell(trial, 0.0)
    out.put(latencies)


def bench_optuna(work: Path, workers: int, seconds: float) -> dict[str, float]:
    """Optuna's journal storage under `workers` worker processes, each asking and telling in a loop."""
    path = str(work / f"optuna-{workers}.journal")
    optuna.create_study(study_name="bench", storage=JournalStorage(JournalFileBackend(path)))
    start = multiprocessing.Barrier(workers)
    out: multiprocessing.Queue = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=optuna_worker, args=(path, seconds, start, out)) for _ in range(workers)]
    for process in processes:
        process.start()
    latencies = [x for _ in processes for x in out.get()]
    for process in processes:
        process.join()
    return summary(workers, latencies, seconds)  # its CPU is all in the workers: the figures are wall time


def print_row(row: dict[str, float], unit: str, mode: str = "") -> None:
    cpu = "".join(f"   {name} {row[name + '_ms']:.2f}" for name in ("service", "server", "clients") if name + "_ms" in row)
    print(f"  {mode}{row['clients']:>3.0f} clients: {row['claims_per_s']:7.0f} {unit}/s   "
          f"p50 {row['p50_ms']:6.1f} ms   p99 {row['p99_ms']:6.1f} ms{'   CPU ms per claim:' + cpu if cpu else ''}", flush=True)  # fmt: skip


async def history_latency(url: str, calls: int) -> dict[str, tuple[float, float]]:
    bus = await Bus.connect(url, name="bench-history", wait=30)
    board = Board(bus, agent="bench-history", retry_seconds=60)
    await board.stats()  # the service is up and caught up
    now = time.time()
    filters = {"latest": {}, "failed": {"status": "failed"}, "role": {"role": "replicator"},
               "arena": {"arena": "tiny/cpu-0/000000000001"}, "agent": {"agent": "agent-7"}, "since": {"since": now - 3600}}  # fmt: skip
    results = {}
    for name, kwargs in filters.items():
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            await board.history(limit=50, **kwargs)
            times.append(time.perf_counter() - started)
        times.sort()
        results[name] = (1e3 * statistics.median(times), 1e3 * times[int(0.99 * (len(times) - 1))])
    await bus.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="claiming time per concurrency level")
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs on the board for the history benchmark")
    parser.add_argument("--calls", type=int, default=50, help="history calls per filter")
    parser.add_argument("--clients", default="1,8,64", help="concurrency levels, comma-separated")
    parser.add_argument("--no-optuna", action="store_true", help="skip Optuna's figures")
    parser.add_argument("--fsync-only", action="store_true", help="claims with the default fsynced server only")
    parser.add_argument("--profile", type=Path, help="run the claims' service under cProfile, its stats to this file")
    args = parser.parse_args()
    levels = [int(x) for x in args.clients.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-blackboard-"))
    print(f"2-core figures depend on load: `uptime` now says {os.getloadavg()[0]:.2f}", flush=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # not a warning per lock wait: the p99 says it

    for fsync in (True, False) if not args.fsync_only else (True,):
        with NatsServer(dir=work / f"nats-{fsync}", fsync=fsync) as server:
            service = start_service(server.url, work / f"claims-{fsync}.duckdb", work / "claims-service.log", args.profile)
            try:
                asyncio.run(fill_pool(server.url))
                print(f"claims (grant + release per cycle, {POOL} pieces of work, {args.seconds:.0f} s each), "
                      + ("every event fsynced (the default):" if fsync else "written back by the OS (nats.fsync = false; "
                         "Optuna's journal file does not fsync either):"), flush=True)  # fmt: skip
                for clients in levels:
                    for handover in (False, True):
                        row = bench_claims(server.url, clients, args.seconds, service.pid, server.process.pid, handover)
                        print_row(row, "claims", "hand-over    " if handover else "claim+release")
            finally:
                service.terminate()
                service.wait(30)
    if not args.no_optuna:
        print(f"Optuna JournalStorage (JournalFileBackend), worker processes asking (+ telling) the next trial, "
              f"{args.seconds:.0f} s each:", flush=True)  # fmt: skip
        for workers in sorted({1, max(levels)}):
            print_row(bench_optuna(work, workers, args.seconds), "asks", "ask+tell     ")
    if args.runs <= 0:
        print(json.dumps({"dir": str(work)}))
        return

    board = work / "history.duckdb"
    started = time.perf_counter()
    Projection(board).close()
    with duckdb.connect(str(board)) as conn:
        bulk.load_runs(conn, args.runs, roles=list(ROLES))
    print(f"history over {args.runs:,} runs (loaded in {time.perf_counter() - started:.0f} s), "
          f"through a service, {args.calls} calls per filter:", flush=True)  # fmt: skip
    with NatsServer(dir=work / "nats2") as server:
        service = start_service(server.url, board, work / "history-service.log")
        try:
            for name, (p50, p99) in asyncio.run(history_latency(server.url, args.calls)).items():
                print(f"  {name:>7}: p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")
        finally:
            service.terminate()
            service.wait(30)
    print(json.dumps({"dir": str(work)}))


if __name__ == "__main__":
    main()
