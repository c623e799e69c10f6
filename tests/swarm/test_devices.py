"""Device slots: one run at a time, served by priority and then in order of arrival."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.devices import DeviceSlot


def tickets(tmp_path: Path) -> int:
    queue = tmp_path / "devices" / "cpu.queue"
    return len(list(queue.iterdir())) if queue.exists() else 0


async def until(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_the_slot_goes_to_the_highest_priority_then_the_longest_waiting(tmp_path: Path) -> None:
    order: list[str] = []
    holding = asyncio.Event()

    async def use(name: str, priority: int, waiting_before: int) -> None:
        await holding.wait()
        await until(lambda: tickets(tmp_path) >= waiting_before)  # arrive in this order
        async with DeviceSlot(tmp_path, "cpu", priority):
            order.append(name)

    async def greedy_implementer() -> None:  # releases and asks again at once, as a pipelined one does
        for i in range(3):
            async with DeviceSlot(tmp_path, "cpu", 0):
                order.append(f"explore-{i}")
                if i == 0:
                    holding.set()
                    await until(lambda: tickets(tmp_path) == 2)  # both others wait behind it

    await asyncio.gather(greedy_implementer(), use("replicate", 1, 0), use("baseline", 2, 1))
    assert order == ["explore-0", "baseline", "replicate", "explore-1", "explore-2"]


async def test_a_waiter_that_gives_up_leaves_no_ticket_behind(tmp_path: Path) -> None:
    async with DeviceSlot(tmp_path, "cpu"):
        waiting = asyncio.create_task(DeviceSlot(tmp_path, "cpu").__aenter__())
        await until(lambda: tickets(tmp_path) == 1)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    assert list((tmp_path / "devices" / "cpu.queue").iterdir()) == []
    async with asyncio.timeout(30):  # and the slot is free for the next one (a ticket left behind blocks it)
        async with DeviceSlot(tmp_path, "cpu"):
            pass
