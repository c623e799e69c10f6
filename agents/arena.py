"""Which arena a device's results belong to, and opening it on the board.

An arena is (harness fingerprint, tier, hardware class): results are only compared within one.
A node opens the arenas of its devices when it starts; opening is idempotent (the event id and
the baseline's patch id are derived from the arena), so every node may do it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from blackboard.client import Board
from blackboard.events import ArenaOpened
from blackboard.rules import code_hash
from harness import fingerprint, prepare, tiers
from harness.devices import device_of, hardware_class
from harness.settings import HarnessSettings


@dataclass(frozen=True)
class ArenaInfo:
    id: str
    tier: str
    hardware: str
    fingerprint: str
    synthetic: bool
    baseline_patch: str


def baseline_code(tier_name: str) -> str:
    """The code an arena of this tier starts from: the tier's baseline in the harness."""
    return tiers.get(tier_name).baseline_path.read_text()


def describe(tier_name: str, device: str, settings: HarnessSettings, notify: Callable[[str], None] | None = None) -> ArenaInfo:
    """The arena of runs on `device` at `tier_name` (prepares the data if it is not yet)."""
    tier = tiers.get(tier_name)
    prepared = None
    if not tier.synthetic:
        prepared = prepare.prepare(settings.corpus, settings.cache_dir, settings.tokenizer, notify, tier.corpus,
                                   tier.vocab_size)
    print_ = fingerprint.fingerprint(prepared, tier)
    hardware = hardware_class(device_of(device))  # a slot (cpu#2) is of its device's class
    slug = re.sub(r"[^a-z0-9]+", "-", hardware.lower()).strip("-")
    arena = f"{tier.name}/{slug}/{print_[:12]}"
    return ArenaInfo(arena, tier.name, hardware, print_, tier.synthetic, f"p-base-{_short(arena)}")


async def open_arena(board: Board, info: ArenaInfo) -> None:
    code = baseline_code(info.tier)
    await board.publish(ArenaOpened(
        id=f"e-arena-{_short(info.id)}", by=board.agent, arena=info.id, baseline_patch=info.baseline_patch,
        fingerprint=info.fingerprint, tier=info.tier, hardware=info.hardware, synthetic=info.synthetic,
        baseline_code=code, baseline_hash=code_hash(code),
    ))  # fmt: skip


async def describe_async(tier_name: str, device: str, settings: HarnessSettings) -> ArenaInfo:
    return await asyncio.to_thread(describe, tier_name, device, settings)


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
