"""The offline brain's optimiser: TPE over the knobs, conditioned on everything tried in the arena.

Each call rebuilds an in-memory optuna study from the arena's history (`IdeaContext.trials`), so
every ideator on every machine conditions on the same evidence and none keeps state that could go
stale. Ok trials are told with their mean val_bpb; failed ones (crash, diverged, out of memory...)
are told as infeasible, which TPE always ranks below every feasible trial: the region a failure
came from becomes less likely to be sampled. Trials still running count as such (TPE's constant
liar treats them as bad until they report, which spreads concurrent proposals).

A proposal changes a few knobs of the arena's best, the way a person would:
- exploit (most proposals): 1 or 2 knobs, values sampled by TPE inside a trust region around the
  best (a factor of 2; one power of two for sizes), favouring values seen in the best trials and
  away from those of the worst and failed ones; knobs tried less often are chosen more often, so
  the whole space gets looked at;
- explore (EXPLORE of them): 1 or 2 knobs at uniform random values in their whole range (x4).
A trial tells TPE only the knobs it moved away from the best: the others sit at the best's value
in almost every trial and would pile both of TPE's densities onto it, making it propose moves too
small to measure. (On harness.sim that one choice decides whether TPE beats random local moves.)
A proposal equal to a configuration already tried (or already proposed in this call) is drawn
again; TPE samples at random until it has N_STARTUP completed trials.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
from dataclasses import dataclass
from typing import Literal

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from agents import knobs
from agents.brains import space
from agents.brains.base import IdeaContext, Trial
from agents.knobs import Knob
from harness.runner import FAILED as RUN_FAILED

EXPLORE = 0.1  # share of proposals that jump at random in the whole range instead of following TPE
N_STARTUP = 8  # TPE samples at random until this many trials have completed
EXPLORE_K = (1, 2)  # knobs changed by an exploring proposal
EXPLOIT_K = (1, 1, 2)  # and by an exploiting one: mostly one, so its effect can be read off
DRAWS = 40  # attempts to find a configuration not tried before, per proposal
FAILED = set(RUN_FAILED)

optuna.logging.set_verbosity(optuna.logging.WARNING)  # a study per call: its INFO lines are noise
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Proposal:
    changes: dict[str, Knob]  # knob -> new value, relative to the best
    before: dict[str, Knob]  # the best's values of the same knobs
    mode: Literal["exploit", "explore"]
    evidence: str  # what the optimiser saw that led here, in a sentence or two


@dataclass(frozen=True)
class History:
    """What the optimiser derives from an arena's trials."""

    best: dict[str, Knob]
    best_value: float | None
    dims: list[space.Dim]
    ok: list[Trial]
    failed: list[Trial]
    tried: set[tuple[tuple[str, str], ...]]


def history(context: IdeaContext) -> History:
    best = knobs.read(context.best_code)
    reference = next((t.knobs for t in context.trials if t.title == "baseline"), None)
    if reference is None:
        reference = context.trials[0].knobs if context.trials else best
    evidence = knob_trials(context)
    seen = [t.knobs for t in evidence]
    ok = [t for t in evidence if t.status == "ok" and t.val_bpb is not None and math.isfinite(t.val_bpb)]
    failed = [t for t in evidence if t.status in FAILED]
    best_value = context.best_mean if context.best_mean is not None else min((t.val_bpb for t in ok), default=None)
    floors = {k: float(context.context_len) for k in best if context.context_len and {"SEQ", "LEN"} <= set(k.split("_"))}
    return History(best=best, best_value=best_value, dims=space.derive(reference, best, seen, floors), ok=ok,
                   failed=failed, tried={space.key(t.knobs) for t in context.trials} | {space.key(best)})  # fmt: skip


def knob_trials(context: IdeaContext) -> list[Trial]:
    """The trials that are evidence about knobs: a code change's score says nothing about its knob
    values (it ran other code), so it stays out of the optimiser's model."""
    return [t for t in context.trials if not t.code_change]


def warmed_up(context: IdeaContext) -> bool:
    """Whether TPE has left its random start-up: N_STARTUP knob trials have finished."""
    return sum(1 for t in knob_trials(context) if t.status == "ok" or t.status in FAILED) >= N_STARTUP


class Optimiser:
    """Proposes knob changes of the arena's best. Stateless across calls but for its random stream."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def propose(self, context: IdeaContext, n: int) -> list[Proposal]:
        h = history(context)
        if not h.dims:
            return []
        study = self._study(context, h)
        refused = set(context.refused)
        taken = set(h.tried)
        counts = _distinct(h)  # once per call: it walks the whole history, and a call makes up to a batch of ideas
        proposals: list[Proposal] = []
        for _ in range(n):
            proposal = self._one(study, h, taken, refused, counts)
            if proposal is None:
                log.info("optimiser: no untried configuration found near the best of %s", context.arena)
                break
            proposals.append(proposal)
        return proposals

    def _study(self, context: IdeaContext, h: History) -> optuna.Study:
        sampler = optuna.samplers.TPESampler(seed=self.rng.randrange(2**31), n_startup_trials=N_STARTUP,
                                             constant_liar=True)  # fmt: skip
        study = optuna.create_study(direction="minimize", sampler=sampler)
        dists = _distributions(space.local(h.dims, h.best))
        centre = space.values(h.dims, h.best)
        worst = max((t.val_bpb for t in h.ok), default=0.0)  # type: ignore[type-var]
        frozen = []
        for t in knob_trials(context):
            # Only the knobs this trial moved away from the best (see the module's docstring), and
            # only values inside the trust region: TPE samples nowhere else.
            params = {k: v for k, v in space.values(h.dims, t.knobs).items()
                      if _fits(dists[k], v) and v != centre.get(k)}  # fmt: skip
            dist = {k: dists[k] for k in params}
            if t.status == "ok" and t.val_bpb is not None and math.isfinite(t.val_bpb):
                frozen.append(create_trial(value=t.val_bpb, params=params, distributions=dist))
            elif t.status in FAILED:  # infeasible: ranked below every ok trial, whatever its value
                frozen.append(create_trial(value=worst, params=params, distributions=dist, constraints={"ok": 1.0}))
            else:
                frozen.append(create_trial(state=TrialState.RUNNING, params=params, distributions=dist))
        study.add_trials(frozen)
        return study

    def _one(self, study: optuna.Study, h: History, taken: set, refused: set[str],
             counts: dict[str, int]) -> Proposal | None:  # fmt: skip
        for draw in range(DRAWS):
            # Half the draws failed to find anything new: the trust region is used up, look further.
            wide = draw >= DRAWS // 2 or self.rng.random() < EXPLORE
            mode: Literal["exploit", "explore"] = "explore" if wide else "exploit"
            k = self.rng.choice(EXPLORE_K) if mode == "explore" else self.rng.choice(EXPLOIT_K)
            weights = [1.0 / math.sqrt(1 + counts[d.name]) for d in h.dims] if mode == "exploit" else None
            chosen = _sample(self.rng, h.dims, weights, min(k, len(h.dims)))
            coords = self._coords(study, h, chosen, mode)
            config = space.apply(h.dims, h.best, coords)
            changes = {name: v for name, v in config.items() if space.key({name: v}) != space.key({name: h.best[name]})}
            if not changes or space.key(config) in taken:
                continue
            before = {name: h.best[name] for name in changes}
            if title(changes, before) in refused:
                continue
            taken.add(space.key(config))
            return Proposal(changes, before, mode, _evidence(h, chosen, mode))
        return None

    def _coords(self, study: optuna.Study, h: History, chosen: list[space.Dim], mode: str) -> dict[str, float | bool]:
        if mode == "explore":
            return {d.name: (self.rng.random() < 0.5) if d.kind == "bool" else self.rng.uniform(d.low, d.high)
                    for d in chosen}  # fmt: skip
        trial = study.ask()  # left running: the constant liar keeps the next ask of this call away
        region = {d.name: d for d in space.local(chosen, h.best)}
        return {d.name: trial.suggest_categorical(d.name, [False, True]) if d.kind == "bool"
                else trial.suggest_float(d.name, region[d.name].low, region[d.name].high) for d in chosen}  # fmt: skip


def title(changes: dict[str, Knob], before: dict[str, Knob]) -> str:
    """`MATRIX_LR 0.03 -> 0.045, WARMDOWN_FRACTION 0.4 -> 0.5`."""
    return ", ".join(f"{name} {knobs.render(before.get(name, '?'))} -> {knobs.render(v)}"  # type: ignore[arg-type]
                     for name, v in sorted(changes.items()))  # fmt: skip


def _distribution(dim: space.Dim) -> BaseDistribution:
    if dim.kind == "bool":
        return CategoricalDistribution([False, True])
    return FloatDistribution(dim.low, dim.high)


def _distributions(dims: list[space.Dim]) -> dict[str, BaseDistribution]:
    return {d.name: _distribution(d) for d in dims}


def _fits(dist: BaseDistribution, value: float | bool) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    assert isinstance(dist, FloatDistribution)
    return not isinstance(value, bool) and dist.low <= value <= dist.high


def _distinct(h: History) -> dict[str, int]:
    """How many distinct values each dimension has taken among the trials that were run."""
    out = {}
    for d in h.dims:
        out[d.name] = len({space.values([d], t.knobs).get(d.name) for t in h.ok + h.failed} - {None})
    return out


def _sample(rng: random.Random, dims: list[space.Dim], weights: list[float] | None, k: int) -> list[space.Dim]:
    """k distinct dimensions, drawn with the given weights (uniform when None)."""
    pool, w, chosen = list(dims), list(weights or [1.0] * len(dims)), []
    for _ in range(k):
        i = rng.choices(range(len(pool)), weights=w)[0]
        chosen.append(pool.pop(i))
        w.pop(i)
    return chosen


def _evidence(h: History, chosen: list[space.Dim], mode: str) -> str:
    """What the optimiser saw: trial counts, the best, and where the good and failed values lie."""
    n_ok, n_failed = len(h.ok), len(h.failed)
    best = f"{h.best_value:.4f}" if h.best_value is not None else "not yet measured"
    parts = [f"{n_ok} ok and {n_failed} failed trials in this arena; the best val_bpb is {best}."]
    if mode == "explore":
        parts.append("Exploring: a random jump on rarely combined knobs, to find regions TPE has not seen.")
    elif n_ok < N_STARTUP:
        parts.append(f"TPE samples at random until {N_STARTUP} trials have completed.")
    else:
        parts.append("TPE favours values seen in the best quarter of trials and away from the rest and the failures.")
    good = sorted(h.ok, key=lambda t: t.val_bpb)[: max(1, len(h.ok) // 4)]  # type: ignore[arg-type, return-value]
    for d in chosen:
        seen_good = [v for t in good if (v := space.values([d], t.knobs).get(d.name)) is not None]
        seen_bad = [v for t in h.failed if (v := space.values([d], t.knobs).get(d.name)) is not None]
        notes = []
        if len(set(seen_good)) > 1 and d.kind != "bool":
            notes.append(f"the best trials have it near {knobs.render(d.from_unit(statistics.median(seen_good)))}")
        if seen_bad and d.kind != "bool":
            notes.append(f"failures had it at {', '.join(sorted({knobs.render(d.from_unit(v)) for v in seen_bad}))}")
        if notes:
            parts.append(f"{d.name}: {'; '.join(notes)}.")
    return " ".join(parts)
