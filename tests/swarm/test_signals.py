"""A Ctrl-C always stops: even where Python 3.11's `wait_for` swallows the cancellation it brings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A main that swallows its cancellation once, as 3.11's wait_for does when a reply races it, then
# works on until the flag the signal set tells it to stop.
SCRIPT = """
import asyncio, os, signal
from swarm.ground import aio

stop = asyncio.Event()

async def main():
    asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGINT)
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        print("cancellation swallowed", flush=True)
    while not stop.is_set():
        await asyncio.sleep(0.05)
    print("stopped by the flag", flush=True)
    return "done"

print(aio.run(main, on_signal=stop.set), flush=True)
"""


def test_a_signal_sets_the_flag_a_main_checks_when_its_cancellation_was_swallowed() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["cancellation swallowed", "stopped by the flag", "done"], done.stdout
