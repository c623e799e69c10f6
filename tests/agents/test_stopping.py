"""An agent stops on its signal even where its role swallowed the cancellation.

Python 3.11's `wait_for` drops a cancellation that races a reply; an implementer that did so went on
claiming and training after its Ctrl-C (seen beside a busy core). Both ways out are tried here, on a
real service: the roles' loops end on `ctx.stopping`, which the signal sets, and a role that does not
look at it is cancelled again until it ends.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agents.runtime import AgentSpec, Role, async_run
from blackboard.client import Board
from swarm.ground.settings import Settings
from swarm.natsserver import NatsServer


class LoopsUntilStopping(Role):
    """Swallows every cancellation, as a loop whose await raced a reply each time would; stops on the flag."""

    name = "loops-until-stopping"
    uses_brain = False

    async def run(self) -> None:
        self.ctx.say("working")
        while not self.ctx.stopping:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass


class SwallowsOnce(Role):
    """Swallows the first cancellation and never looks at the flag: only a second cancellation ends it."""

    name = "swallows-once"
    uses_brain = False

    async def run(self) -> None:
        self.ctx.say("working")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        await asyncio.Event().wait()


@pytest.mark.parametrize("role", [LoopsUntilStopping, SwallowsOnce])
async def test_a_signalled_agent_stops_and_says_so_even_if_its_role_swallowed_the_cancellation(
    role: type[Role], board: Board, nats_server: NatsServer, tmp_path: Path,
) -> None:  # fmt: skip
    signalled = asyncio.Event()
    agent = asyncio.create_task(async_run(AgentSpec("a1", role, "n1", nats_server.url, tmp_path), Settings(dir=tmp_path),
                                          signalled))  # fmt: skip
    while not (await board.query("SELECT count(*) FROM agents WHERE agent = 'a1'"))["rows"] == [[1]]:
        await asyncio.sleep(0.05)
    signalled.set()  # what `aio.run` does on the first SIGINT, beside cancelling the agent's main
    agent.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(agent, timeout=120)
    left = "SELECT count(*) FROM agents WHERE agent = 'a1' AND status = 'left' AND left_reason = 'stopped by signal'"
    while (await board.query(left))["rows"] != [[1]]:  # the service applies AgentLeft a moment later
        await asyncio.sleep(0.05)
