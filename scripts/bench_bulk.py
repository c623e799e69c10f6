"""The blackboard's bulk benchmarks: events applied per second, and history() over a million runs.

    python scripts/bench_bulk.py apply --cycles 2000 --batch 1 10 100 1000   # events/s by batch size
    python scripts/bench_bulk.py history --runs 1000000 --db board.duckdb      # history() p50/p99
    python scripts/bench_bulk.py apply --batch 100 1000 --onto board.duckdb    # events/s onto 1M runs
    python scripts/bench_bulk.py budget --cycles 1000 10000 100000             # a grant's budget check
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blackboard import queries  # noqa: E402
from blackboard.bulk import (  # noqa: E402
    history_filters, load_runs, measure, measure_apply, measure_budget_check, synthetic_events,
)  # fmt: skip
from blackboard.projection import Projection  # noqa: E402
from roles import ROLES  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench_bulk.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    apply = sub.add_parser("apply", help="apply throughput by batch size")
    apply.add_argument("--cycles", type=int, default=2000, help="ideas in the stream, 11 events each")
    apply.add_argument("--batch", type=int, nargs="+", default=[1, 10, 100, 1000])
    apply.add_argument("--onto", type=Path, help="apply onto this board (say, one `history --db` filled)")
    history = sub.add_parser("history", help="history() latency over a bulk-loaded board")
    history.add_argument("--runs", type=int, default=1_000_000)
    history.add_argument("--calls", type=int, default=50)
    history.add_argument("--db", type=Path, help="keep the board here (default: a temporary directory)")
    budget = sub.add_parser("budget", help="what a run budget checks on each implement grant, as the history grows")
    budget.add_argument("--cycles", type=int, nargs="+", default=[1000, 10_000, 100_000], help="ideas in the history")
    budget.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    if args.what == "budget":
        for cycles in args.cycles:
            p50, p99 = measure_budget_check(cycles, args.calls)
            print(f"budget check on an implement grant, {cycles:>7,} ideas in the history: p50 {p50:8.3f} ms  p99 {p99:8.3f} ms")
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "apply":
            for batch in args.batch:
                events = synthetic_events(args.cycles, tag=f"b{batch}-")
                rate = measure_apply(events, batch, args.onto or Path(tmp) / f"apply-{batch}.duckdb")
                print(f"apply: {len(events)} events in batches of {batch}: {rate:,.0f} events/s")
            return
        db = args.db or Path(tmp) / "history.duckdb"
        with Projection(db) as projection:
            if projection.conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0:  # type: ignore[index]
                started = time.perf_counter()
                load_runs(projection.conn, args.runs, roles=list(ROLES))
                print(f"loaded {args.runs:,} runs in {time.perf_counter() - started:.1f} s")
            cursor = projection.cursor()
            for name, filters in history_filters(cursor).items():
                p50, p99 = measure(lambda: queries.history(cursor, **filters), args.calls)
                print(f"history {name:>18}: p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ({args.calls} calls)")
            cursor.close()


if __name__ == "__main__":
    main()
