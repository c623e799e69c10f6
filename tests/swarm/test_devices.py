"""Device slots: one run at a time, served by priority and then in order of arrival."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.devices import DeviceSlot


async def test_the_slot_goes_to_the_highest_priority_then_the_longest_waiting(tmp_path: Path) -> None:
    order: list[str] = []

    async def use(name: str, priority: int, hold: float, start_after: float) -> None:
        await asyncio.sleep(start_after)
        async with DeviceSlot(tmp_path, "cpu", priority):
            order.append(name)
            await asyncio.sleep(hold)

    async def greedy_implementer() -> None:  # releases and asks again at once, as a pipelined one does
        for i in range(3):
            async with DeviceSlot(tmp_path, "cpu", 0):
                order.append(f"explore-{i}")
                await asyncio.sleep(0.3)

    await asyncio.gather(greedy_implementer(), use("replicate", 1, 0.1, 0.1), use("baseline", 2, 0.1, 0.2))
    assert order == ["explore-0", "baseline", "replicate", "explore-1", "explore-2"]


async def test_a_waiter_that_gives_up_leaves_no_ticket_behind(tmp_path: Path) -> None:
    async with DeviceSlot(tmp_path, "cpu"):
        waiting = asyncio.create_task(DeviceSlot(tmp_path, "cpu").__aenter__())
        await asyncio.sleep(0.2)
        assert len(list((tmp_path / "devices" / "cpu.queue").iterdir())) == 1
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    assert list((tmp_path / "devices" / "cpu.queue").iterdir()) == []
    async with DeviceSlot(tmp_path, "cpu") as slot:  # and the slot is free for the next one
        assert slot.waited < 0.5
