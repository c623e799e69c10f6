"""Fixtures for the harness tests: real prepared data, real runs, small tiers to keep them fast.

The full tiny tier runs once per session (the acceptance run); everything else uses SMALL, a tier
of a few seconds, and `small_train`, the baseline shrunk by editing its knobs the way agents do.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from harness import prepare, tiers
from harness.runner import RunResult, run
from swarm.ground.settings import HarnessSettings

BASELINE = (Path(prepare.__file__).parent / "train.py").read_text()
# A few seconds of training; the eval batch and length match the tiny tier's model family.
SMALL = tiers.Tier(name="test-small", budget_tokens=8_192, train_limit_seconds=90, eval_limit_seconds=60,
                   context_len=64, eval_batch=8, eval_tokens=4_096)


def set_knobs(source: str, **knobs: object) -> str:
    """The source with UPPER_CASE constants replaced, as an agent's edit would."""
    for name, value in knobs.items():
        source, count = re.subn(rf"^{name} = [^#\n]*", f"{name} = {value!r}  ", source, count=1, flags=re.M)
        assert count == 1, name
    return source


SMALL_TRAIN = set_knobs(BASELINE, DEPTH=1, WIDTH=32, HEADS=2, SEQ_LEN=64, BATCH_SIZE=8)


@pytest.fixture(scope="session")
def settings() -> HarnessSettings:
    """The default corpus in the user's real cache: prepared once, shared with every later run."""
    return HarnessSettings()


@pytest.fixture(scope="session")
def prepared(settings: HarnessSettings) -> prepare.Prepared:
    return prepare.prepare(settings.corpus, settings.cache_dir, settings.tokenizer, default=tiers.get("tiny").corpus)


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def run_small(settings: HarnessSettings, prepared: prepare.Prepared, runs_dir: Path):  # type: ignore[no-untyped-def]
    """Run a source on a tier (SMALL by default) and return its RunResult."""

    def go(source: str, tier: tiers.Tier = SMALL, seed: int = 1, guard: bool = True, **kwargs: object) -> RunResult:
        return asyncio.run(run(source, tier, seed=seed, settings=kwargs.pop("settings", settings),  # type: ignore[arg-type]
                               runs_dir=runs_dir, guard=guard, **kwargs))  # type: ignore[arg-type]

    return go


@pytest.fixture(scope="session")
def small_baseline(run_small) -> RunResult:  # type: ignore[no-untyped-def]
    """The shrunk baseline on SMALL, seed 1: the reference score of the tamper tests."""
    return run_small(SMALL_TRAIN)


@pytest.fixture(scope="session")
def tiny_baseline(run_small) -> RunResult:  # type: ignore[no-untyped-def]
    """The real baseline on the real tiny tier, seed 1 (about a minute)."""
    return run_small(BASELINE, tiers.get("tiny"))
