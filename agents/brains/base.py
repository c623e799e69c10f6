"""What a brain is: the one small protocol every brain implements, and the records it trades in.

A brain decides; roles do everything else (claiming, publishing, running the harness). Each role
asks its brain one kind of question:
- the ideator:     `ideas(IdeaContext)`      -> new hypotheses for an arena
- the implementer: `implement(ImplementTask, check)` -> a new train.py that passes `check` (the
                   guard and a smoke run); `repair(RepairTask, check)` after a crash
- the reviewer:    `review(ReviewTask)`      -> approve or reject, with reasons
- the ideator, every N trials: `note(IdeaContext)` -> the lab notebook's next note (LLM brains only)

Every call to a paid model reports its `Usage` through the `on_usage` callback the agent gives the
brain (it becomes a `UsageRecorded` event), and asks `budget_left` first: when the swarm-wide
budget is spent, LLM brains stop calling their model and answer as the offline brain would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from swarm.ground.errors import SwarmError


class BrainError(SwarmError):
    """The brain could not answer: the model failed, or its answer could not be used."""


class CannotDo(BrainError):
    """This brain cannot do this task at all (say, the offline brain and an idea given only in words)."""


class PreflightFailed(BrainError):
    """The code still fails the pre-flight after the fixes allowed: the hypothesis is given up, not retried."""


class Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class Trial(Record):
    """One piece of code tried in an arena, as the ideator sees it."""

    patch: str
    title: str  # its hypothesis' title ("baseline" for the arena's baseline)
    knobs: dict[str, Any]  # the UPPER_CASE constants of its train.py
    status: str  # ok if any run of it succeeded, else the status of its last run
    val_bpb: float | None = None  # mean over its ok runs
    n: int = 0  # ok runs
    reason: str | None = None  # why it failed, when it did
    best: bool = False  # the arena's current best
    code_change: bool = False  # it changed code, not only knob values: no evidence about knobs
    std: float | None = None  # spread of its ok runs' val_bpb
    outcome: str | None = None  # the promotion rule's latest verdict: promoted, not_better, failed...
    explanation: str = ""  # why the rule decided so
    rejected: list[str] = []  # reasons of the reviews that rejected it
    rationale: str = ""
    diff: str = ""  # against its parent: what a code change did
    metrics: dict[str, float] = {}  # what the harness measured: steps, tokens, tokens_per_s, params, peak_memory_mb...


class IdeaContext(Record):
    arena: str
    tier: str
    program: str  # roles/ideator.md: the lab's instructions, edited by people
    best_patch: str
    best_code: str
    best_mean: float | None = None
    spread: float | None = None  # the arena's measured seed spread of val_bpb
    trials: list[Trial] = []  # everything tried here, oldest first
    refused: list[str] = []  # ideas and patches refused as duplicates, each with a pointer to the original
    context_len: int | None = None  # the tier's evaluation length: training sequences below it waste a run
    n: int = 1  # how many ideas are wanted
    tier_info: str = ""  # the tier block: budget kind and size, hard limits, hardware, evaluation size
    contract: str = ""  # the harness contract: what train.py may and may not do
    pending: list[str] = []  # hypotheses queued or in flight now: not to be proposed again
    note: str = ""  # the arena's latest lab-notebook note
    budget_tokens: int = 12_000  # the whole request's size: older, less informative trials are summarised


class Idea(Record):
    title: str
    rationale: str
    intent: dict[str, Any] = {}  # {"knobs": {"MATRIX_LR": 0.04}} and/or {"change": "what to edit, in words"}
    parent: str | None = None  # the patch it builds on; None: the arena's best


class ImplementTask(Record):
    program: str  # roles/implementer.md
    contract: str  # the harness contract (harness.contract's docstring): what train.py may do
    title: str
    rationale: str
    intent: dict[str, Any] = {}
    parent_code: str


class RepairTask(ImplementTask):
    code: str  # the train.py that failed
    status: str  # crash, rejected, diverged...
    reason: str
    log_tail: str = ""
    attempt: int = 1
    facts: str = ""  # what matters for this kind of failure: traceback, memory and cap, steps, loss curve


class Implementation(Record):
    code: str  # the whole new train.py
    notes: str = ""
    checked: bool = False  # it passed the pre-flight check the brain was given (an LLM's conversation runs it)


Check = Callable[[str], Awaitable[str | None]]  # a train.py -> None when it passes the pre-flight, else what failed


class ReviewTask(Record):
    program: str  # roles/reviewer.md
    contract: str
    title: str
    rationale: str
    intent: dict[str, Any] = {}
    parent_code: str
    code: str
    diff: str
    values: list[float] = []  # val_bpb of the candidate's runs so far
    best_values: list[float] = []  # val_bpb of the arena's best
    spread: float | None = None
    problems: list[str] = []  # what the static checks found (guard, scope of the diff)
    metrics: dict[str, float] = {}  # what the harness measured on the candidate's runs (means)
    parent_metrics: dict[str, float] = {}  # and on its parent's
    similar: list[str] = []  # earlier trials of the arena that read like this one, with their outcomes


class ReviewVerdict(Record):
    verdict: Literal["approve", "reject"]
    reasons: list[str] = []


class Usage(Record):
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass
class Accounting:
    """How a brain reports its spend and learns what is left of the swarm's budget."""

    on_usage: Callable[[Usage], None] = lambda usage: None
    budget_left: Callable[[], float | None] = lambda: None  # None: no budget set
    spent_locally: float = field(default=0.0)  # what this brain spent, for its own view


class Brain(ABC):
    """Decides. Implementations: offline (no network), anthropic, openai, hybrid."""

    name: str

    def __init__(self, accounting: Accounting | None = None) -> None:
        self.accounting = accounting or Accounting()

    @abstractmethod
    async def ideas(self, context: IdeaContext) -> list[Idea]: ...

    @abstractmethod
    async def implement(self, task: ImplementTask, check: Check | None = None) -> Implementation:
        """A new train.py; a brain that converses sends `check`'s complaints back until it passes."""

    @abstractmethod
    async def repair(self, task: RepairTask, check: Check | None = None,
                     thread: list[dict[str, str]] | None = None) -> Implementation | None:  # fmt: skip
        """A fixed train.py, or None when the brain cannot (or, asked, declines to) repair this failure.
        `thread` is the hypothesis' repair conversation so far, extended in place: each repair sees the
        attempts before it."""

    @abstractmethod
    async def review(self, task: ReviewTask) -> ReviewVerdict: ...

    async def note(self, context: IdeaContext) -> str | None:
        """A lab-notebook note on what the arena has learned; None: this brain writes none (the offline one)."""
        return None

    async def check(self) -> None:
        """Before any work: ConfigError when this brain cannot work at all (a model its provider does
        not know, a key it refuses). A brain without a provider has nothing to check."""

    async def aclose(self) -> None:
        """Release what the brain holds (an SDK's connection pool); call it before the loop ends."""
