"""What the brain tests share: the baseline train.py, the test keys, idea contexts."""

from __future__ import annotations

from pathlib import Path

from agents import knobs
from agents.brains.base import IdeaContext, Trial
from blackboard.client import Board
from blackboard.events import ArenaOpened
from blackboard.rules import code_hash

BASELINE = (Path(__file__).resolve().parents[2] / "harness" / "train.py").read_text()
ANTHROPIC_KEY = "sk-ant-test-4f9c2e7d1b8a6053"
OPENAI_KEY = "sk-proj-test-9a1e5c3f7b2d4860"


def baseline_trial(value: float = 1.6) -> Trial:
    return Trial(patch="p0", title="baseline", knobs=knobs.read(BASELINE), status="ok", val_bpb=value, n=3, best=True)


def context(trials: list[Trial] | None = None, n: int = 1, code: str = BASELINE, best: str = "p0") -> IdeaContext:
    trials = trials if trials is not None else [baseline_trial()]
    best_trial = next((t for t in trials if t.patch == best), None)
    return IdeaContext(arena="arena-1", tier="sim", program="Propose experiments.", best_patch=best, best_code=code,
                       best_mean=best_trial.val_bpb if best_trial else None, spread=0.004, trials=trials,
                       n=n)  # fmt: skip


def warm_trials(count: int = 8) -> list[Trial]:
    """`count` finished knob trials, the baseline among them: 8 are TPE's start-up."""
    base = knobs.read(BASELINE)
    return [baseline_trial()] + [
        Trial(patch=f"w{i}", title=f"MATRIX_LR {i}", knobs={**base, "MATRIX_LR": round(0.021 + 0.002 * i, 4)},
              status="ok", val_bpb=1.61 + 0.001 * i, n=1)  # fmt: skip
        for i in range(count - 1)
    ]


async def open_sim_arena(board: Board, arena: str) -> None:
    """The arena opened on the board as a node opens it, with the baseline as patch p0."""
    await board.publish(ArenaOpened(by="n1", arena=arena, baseline_patch="p0", fingerprint="f" * 64, tier="sim",
                                    hardware="cpu-x86", baseline_code=BASELINE, baseline_hash=code_hash(BASELINE)))  # fmt: skip
