"""Benchmark the implementer's pipeline: how long its device sits idle between consecutive runs
while its brain takes seconds to answer.

One implementer agent, an LLM brain served by the fake Anthropic server with a fixed delay per
answer, runs on the sim tier of a fixed duration, and hypotheses queued up front. The implementer
prepares its next patch while the current run trains, so the brain's delay should not show up as
idle device time. Idle time is read from the board: the gap between a run's RunFinished and the
next run's RunStarted, for the same agent.

    python scripts/bench_pipeline.py                       # brain 5 s, runs 10 s, 8 runs
    python scripts/bench_pipeline.py --brain-seconds 5 --run-seconds 3 --runs 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.arena import describe  # noqa: E402
from agents.knobs import edit, read  # noqa: E402
from blackboard.client import Board  # noqa: E402
from blackboard.events import HypothesisProposed, new_id  # noqa: E402
from harness import sim  # noqa: E402
from swarm.ground.bus import Bus  # noqa: E402
from swarm.natsserver import NatsServer  # noqa: E402
from harness.settings import HarnessSettings  # noqa: E402
from tests.fakellm import FakeLLM, Request, code_answer  # noqa: E402


def ideas(count: int) -> dict[str, str]:
    """Distinct hypotheses (title -> the train.py that implements it)."""
    baseline = sim.BASELINE.read_text()
    lr = read(baseline)["MATRIX_LR"]
    return {f"MATRIX_LR x{1 + (i + 1) / 100:.2f}": edit(baseline, {"MATRIX_LR": round(lr * (1 + (i + 1) / 100), 6)})
            for i in range(count)}  # fmt: skip


async def run(args: argparse.Namespace, url: str, work: Path, fake: FakeLLM) -> list[float]:
    bus = await Bus.connect(url, name="bench", wait=30)
    board = Board(bus, agent="bench", retry_seconds=60)
    arena = describe("sim", "cpu", HarnessSettings()).id
    while arena not in [a["arena"] for a in (await board.stats()).get("arenas", [])]:
        await asyncio.sleep(0.2)  # the implementer opens the arena when it starts
    for title in ideas(args.runs):
        await board.publish(HypothesisProposed(by="bench", hypothesis=new_id("h"), arena=arena, title=title,
                                               intent={"change": title}))  # fmt: skip
    deadline = time.monotonic() + args.runs * (args.run_seconds + args.brain_seconds) + 120
    while time.monotonic() < deadline:
        done = (await board.query("SELECT count(*) FROM runs WHERE status <> 'running'"))["rows"][0][0]
        if done >= args.runs:
            break
        await asyncio.sleep(1)
    rows = (await board.query("""SELECT started_at, finished_at FROM runs WHERE agent = 'impl'
                                  ORDER BY started_at"""))["rows"]  # fmt: skip
    await bus.close()
    from datetime import datetime

    def t(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    return [t(nxt[0]) - t(cur[1]) for cur, nxt in zip(rows, rows[1:]) if cur[1] is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brain-seconds", type=float, default=5.0, help="how long the brain takes per answer")
    parser.add_argument("--run-seconds", type=float, default=10.0, help="duration of each sim run")
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    patches = ideas(args.runs)
    with FakeLLM(delay=args.brain_seconds) as fake, NatsServer(dir=work / "nats") as server:
        fake.answer_with(lambda request: code_answer(patches[request.title or ""]) if request.task == "implement" else "[]")
        env = {**os.environ, "SWARM_HARNESS__SIM_SECONDS": str(args.run_seconds), "SWARM_BRAIN__BASE_URL": fake.url,
               "SWARM_BRAIN__MODEL": "fake", "ANTHROPIC_API_KEY": "bench"}  # fmt: skip
        swarm = [sys.executable, "-m", "swarm"]
        service = subprocess.Popen([*swarm, "service", "--url", server.url, "--db", str(work / "board.duckdb")],
                                   env=env, stdout=open(work / "service.log", "wb"), stderr=subprocess.STDOUT)  # fmt: skip
        agent = subprocess.Popen([*swarm, "-v", "agent", "--role", "implementer", "--url", server.url, "--dir", str(work),
                                  "--id", "impl", "--tier", "sim", "--brain", "anthropic", "--device", "cpu"],
                                 env=env, stdout=open(work / "impl.log", "wb"), stderr=subprocess.STDOUT)  # fmt: skip
        try:
            gaps = asyncio.run(run(args, server.url, work, fake))
        finally:
            for process in (agent, service):
                process.terminate()
                process.wait(60)
    gaps.sort()
    print(f"brain {args.brain_seconds:.1f} s per answer, sim runs of {args.run_seconds:.1f} s, {len(gaps) + 1} runs")
    print(f"device idle between consecutive runs: median {statistics.median(gaps) * 1000:.1f} ms, "
          f"max {gaps[-1] * 1000:.1f} ms, all {[round(g * 1000, 1) for g in gaps]} ms")  # fmt: skip
    print(f"(without pipelining each gap would be at least the brain's {args.brain_seconds:.1f} s); logs in {work}")


if __name__ == "__main__":
    main()
