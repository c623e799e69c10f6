"""A claimant process for the race test: claim until nothing is left, print each work id granted."""

from __future__ import annotations

import asyncio
import sys

from blackboard.client import Board
from swarm.ground.bus import Bus


async def main(url: str, agent: str, arena: str, hold: str) -> None:
    bus = await Bus.connect(url, name=agent)
    board = Board(bus, agent=agent, retry_seconds=30)
    try:
        while (claim := await board.claim(["implement"], [arena], wait=3)) is not None:
            print(claim.work, flush=True)
            if hold == "hold":  # keep it, renewing, until killed
                async with board.heartbeat(0.5) as beat:
                    beat.hold(claim.claim)
                    await asyncio.sleep(3600)
            await board.release(claim.claim, done=True)
    finally:
        await bus.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
