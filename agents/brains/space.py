"""The search space of the offline optimiser, derived from the knob values of a train.py.

Each tunable number becomes one dimension searched in a transformed coordinate where a step means
the same thing anywhere in its range:
- positive floats: log scale, x4 either way of the centre (learning rates, scales, caps);
- momenta (a float in (0, 1) named like MOMENTUM, BETAS, EMA): logit scale, x4 in odds either way,
  so they stay inside (0, 1) and 0.95 moves in steps of 1 - beta;
- shares of something (a float in (0, 1) named like FRACTION, DROPOUT, PROB, SHARE): linear in
  [0, min(1, 4 x the value)], where the lowest 5% of the range means exactly 0: a warm-up can be
  switched off;
- a float that is 0 (WEIGHT_DECAY = 0.0): linear in [0, ZERO_SPAN];
- sizes that shapes rely on (named like WIDTH, HEADS, DIM, BATCH, SEQ, LEN, TOKENS) and are powers
  of two: powers of two within x4 (it keeps WIDTH divisible by HEADS and head dimensions even); any
  other positive int (DEPTH, MLP_RATIO): log scale, x4, every integer reachable;
- bools: either value.
A floor can be set per knob (the tier's evaluation length for SEQ_LEN: a model trained on shorter
sequences than it is scored on wastes the run). Knobs the best has and the baseline has not (a
winner's code change added them) are searched too, their kind read from the best's value.
Tuples are searched element by element (`ADAM_BETAS[1]`). Strings, negative numbers and plumbing
(LOG_EVERY, COMPILE, seeds, devices) are never touched: they do not change what the model learns,
or changing them would be gaming the metric.

Values leave the space rounded to two significant digits (for a fraction, of its distance to the
nearer end), so titles read like a person wrote them and near-identical configurations collapse
into one, which is what the optimiser's duplicate check compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

from agents.knobs import Knob

SCALE = math.log(4.0)  # half-width of a log or logit range around its centre
LOCAL = math.log(2.0)  # half-width of the trust region around the best, where exploitation samples
ZERO_SPAN = 0.2  # a knob whose baseline is 0.0 is searched in [0, ZERO_SPAN]
PLUMBING = {"LOG", "EVERY", "COMPILE", "SEED", "DEVICE", "DEBUG", "PRINT", "VERBOSE", "PROFILE", "EVAL"}
MOMENTA = {"MOMENTUM", "BETA", "BETAS", "EMA"}
SHARES = {"FRACTION", "FRAC", "DROPOUT", "PROB", "SHARE"}
SHAPES = {"WIDTH", "HEADS", "HEAD", "DIM", "BATCH", "SEQ", "LEN", "TOKENS", "VOCAB"}
ZERO_SNAP = 0.05  # share of a share's range, at its bottom, that means exactly 0

Kind = Literal["log", "logit", "linear", "share", "pow2", "int", "bool"]


@dataclass(frozen=True)
class Dim:
    """One searched number: `name` is a knob, or a knob and an index (`ADAM_BETAS[1]`)."""

    name: str
    knob: str
    index: int | None
    kind: Kind
    low: float  # bounds of the transformed coordinate (unused for bools)
    high: float

    def to_unit(self, value: Any) -> float | bool | None:
        """The transformed coordinate of a knob value; None when it does not fit this dimension."""
        if self.kind == "bool":
            return value if isinstance(value, bool) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if self.kind in ("linear", "share"):
            return float(value) if value >= 0 else None
        if value <= 0 or (self.kind == "logit" and value >= 1):
            return None
        if self.kind == "logit":
            return math.log(value / (1.0 - value))
        return math.log2(value) if self.kind == "pow2" else math.log(value)

    def from_unit(self, u: float | bool) -> Knob:
        """The rounded knob value at coordinate `u`."""
        if self.kind == "bool":
            return bool(u)
        u = min(max(float(u), self.low), self.high)
        if self.kind == "pow2":
            return 2 ** round(u)
        if self.kind == "int":
            return max(1, round(math.exp(u)))
        if self.kind == "linear":
            return 0.0 if u < ZERO_SPAN / 100 else _round(u)
        if self.kind == "share":
            return 0.0 if u < self.high * ZERO_SNAP else _round(u)
        if self.kind == "logit":
            p = 1.0 / (1.0 + math.exp(-u))
            return _round(p) if p <= 0.5 else round(1.0 - _round(1.0 - p), 12)
        return _round(math.exp(u))


def derive(reference: dict[str, Knob], centre: dict[str, Knob], seen: list[dict[str, Knob]],
           floors: dict[str, float] | None = None) -> list[Dim]:  # fmt: skip
    """The dimensions: kinds from `reference` (the arena's baseline; the best's value for a knob the
    baseline lacks), ranges around `centre` (the best so far), raised to `floors` (knob -> lowest
    value), and widened to cover every value in `seen`, so any trial can be told."""
    dims = []
    for knob, value in {**centre, **reference}.items():
        if _plumbing(knob):
            continue
        items = list(enumerate(value)) if isinstance(value, tuple) else [(None, value)]
        for index, item in items:
            kind = _kind(knob, item)
            if kind is None:
                continue
            name = knob if index is None else f"{knob}[{index}]"
            probe = Dim(name, knob, index, kind, -math.inf, math.inf)
            here = probe.to_unit(_element(centre.get(knob), index))
            if here is None:
                here = probe.to_unit(item)
            low, high = _bounds(kind, here, item)  # type: ignore[arg-type]
            floor = probe.to_unit((floors or {}).get(knob))
            if isinstance(floor, float):
                low, high = max(low, floor), max(high, floor)
            for trial in seen:
                u = probe.to_unit(_element(trial.get(knob), index))
                if isinstance(u, float):
                    low, high = min(low, u), max(high, u)
            dims.append(Dim(name, knob, index, kind, low, high))
    return dims


def local(dims: list[Dim], centre: dict[str, Knob]) -> list[Dim]:
    """The trust region: each dimension narrowed to LOCAL (one power of two) around `centre`."""
    out = []
    for dim in dims:
        u = dim.to_unit(_element(centre.get(dim.knob), dim.index))
        if dim.kind == "bool" or not isinstance(u, float):
            out.append(dim)
            continue
        half = {"pow2": 1.0, "linear": ZERO_SPAN / 4, "share": dim.high / 4}.get(dim.kind, LOCAL)
        out.append(replace(dim, low=max(dim.low, u - half), high=min(dim.high, u + half)))
    return out


def values(dims: list[Dim], config: dict[str, Knob]) -> dict[str, float | bool]:
    """A configuration's coordinates, for the dimensions it has a fitting value for."""
    out = {}
    for dim in dims:
        u = dim.to_unit(_element(config.get(dim.knob), dim.index))
        if u is not None:
            out[dim.name] = u
    return out


def apply(dims: list[Dim], base: dict[str, Knob], coords: dict[str, float | bool]) -> dict[str, Knob]:
    """`base` with the dimensions in `coords` set: whole knobs out, tuples rebuilt."""
    out = dict(base)
    for dim in dims:
        if dim.name not in coords:
            continue
        value = dim.from_unit(coords[dim.name])
        if dim.index is None:
            out[dim.knob] = value
        else:
            items = list(out[dim.knob])  # type: ignore[arg-type]
            items[dim.index] = value
            out[dim.knob] = tuple(items)
    return out


def key(config: dict[str, Knob]) -> tuple[tuple[str, str], ...]:
    """A configuration as a comparable key: 4 and 4.0 differ (they are different code)."""
    return tuple(sorted((name, f"{type(value).__name__}:{value!r}") for name, value in config.items()))


def _kind(knob: str, value: Any) -> Kind | None:
    if isinstance(value, bool):
        return "bool"
    words = set(knob.split("_"))
    if isinstance(value, int):
        if value <= 0:
            return None
        return "pow2" if value & (value - 1) == 0 and SHAPES & words else "int"
    if isinstance(value, float):
        if value == 0.0:
            return "linear"
        if value < 0:
            return None
        if value < 1 and SHARES & words:
            return "share"
        return "logit" if value < 1 and MOMENTA & words else "log"
    return None  # strings: the optimiser cannot know their alternatives


def _bounds(kind: Kind, u: float | bool, reference: Any) -> tuple[float, float]:
    if kind == "bool":
        return 0.0, 1.0
    if kind == "linear":
        return 0.0, max(ZERO_SPAN, float(u) * 2)
    if kind == "share":  # the range follows the baseline's value, so the zero snap stays put
        return 0.0, min(1.0, 4 * float(reference))
    if kind == "pow2":
        return max(0.0, round(float(u)) - 2.0), round(float(u)) + 2.0
    return float(u) - SCALE, float(u) + SCALE


def _element(value: Any, index: int | None) -> Any:
    if index is None:
        return value
    return value[index] if isinstance(value, tuple) and index < len(value) else None


def _plumbing(knob: str) -> bool:
    return bool(PLUMBING & set(knob.split("_")))


def _round(x: float) -> float:
    """Two significant digits: 0.04517 -> 0.045, 123.4 -> 120.0."""
    if x == 0:
        return 0.0
    digits = 1 - math.floor(math.log10(abs(x)))
    return round(x, digits)
