"""Benchmark the blackboard: claims per second and claim latency with 1, 8 and 64 concurrent
clients, and history query latency with 1,000,000 runs on the board.

Everything is real: a nats-server (JetStream synced on every write), a `swarm service` process,
clients in other processes. A claim here is a full cycle's first half: the client asks, the
service decides, publishes ClaimGranted (fsynced), sees it back from the stream and replies; the
client then releases the work back to the pool (a second decision), so a small pool serves the
whole run.

    python scripts/bench_blackboard.py                 # the figures quoted in the notes
    python scripts/bench_blackboard.py --seconds 5 --runs 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blackboard import bulk  # noqa: E402
from blackboard.client import Board  # noqa: E402
from blackboard.events import ArenaOpened, HypothesisProposed, new_id  # noqa: E402
from blackboard.projection import Projection  # noqa: E402
from blackboard.rules import code_hash  # noqa: E402
from roles import ROLES  # noqa: E402
from swarm.ground.bus import Bus  # noqa: E402
from swarm.natsserver import NatsServer  # noqa: E402

ARENA = "bench/cpu/000000000000"
POOL = 256  # pieces of work, claimed and released over and over


def start_service(url: str, db: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SWARM_BOARD__LEASE_SECONDS": "60", "SWARM_BOARD__MAX_CLAIMS_PER_AGENT": "4"}
    return subprocess.Popen([sys.executable, "-m", "swarm", "service", "--url", url, "--db", str(db), "--instance", "bench"],
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


async def claimers(url: str, tasks: int, seconds: float, proc: int) -> list[float]:
    """`tasks` concurrent clients claiming and releasing for `seconds`; their claim latencies."""
    bus = await Bus.connect(url, name=f"bench-{proc}", wait=30)
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def client(i: int) -> None:
        board = Board(bus, agent=f"client-{proc}-{i}", retry_seconds=30)
        while time.monotonic() < stop:
            started = time.perf_counter()
            claim = await board.claim(["implement"], [ARENA], wait=1)
            if claim is None:
                continue
            latencies.append(time.perf_counter() - started)
            await board.release(claim.claim, done=False, reason="bench")

    await asyncio.gather(*(client(i) for i in range(tasks)))
    await bus.close()
    return latencies


def claimer_process(url: str, tasks: int, seconds: float, proc: int, out: multiprocessing.Queue) -> None:
    out.put(asyncio.run(claimers(url, tasks, seconds, proc)))


def bench_claims(url: str, clients: int, seconds: float) -> dict[str, float]:
    processes = min(clients, 4)
    out: multiprocessing.Queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=claimer_process, args=(url, clients // processes + (i < clients % processes),
                                                                     seconds, i, out)) for i in range(processes)]  # fmt: skip
    for worker in workers:
        worker.start()
    latencies = [x for _ in workers for x in out.get()]
    for worker in workers:
        worker.join()
    latencies.sort()
    return {"clients": clients, "claims_per_s": len(latencies) / seconds,
            "p50_ms": 1e3 * statistics.median(latencies), "p99_ms": 1e3 * latencies[int(0.99 * (len(latencies) - 1))]}  # fmt: skip


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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-blackboard-"))
    print(f"2-core figures depend on load: `uptime` now says {os.getloadavg()[0]:.2f}", flush=True)

    with NatsServer(dir=work / "nats") as server:
        service = start_service(server.url, work / "claims.duckdb", work / "claims-service.log")
        try:
            asyncio.run(fill_pool(server.url))
            print(f"claims (grant + release per cycle, {POOL} pieces of work, {args.seconds:.0f} s each):")
            for clients in (1, 8, 64):
                row = bench_claims(server.url, clients, args.seconds)
                print(f"  {row['clients']:>3} clients: {row['claims_per_s']:7.0f} claims/s   "
                      f"p50 {row['p50_ms']:6.1f} ms   p99 {row['p99_ms']:6.1f} ms", flush=True)  # fmt: skip
        finally:
            service.terminate()
            service.wait(30)

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
