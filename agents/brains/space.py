"""The search space of the offline optimiser, derived from the knob values of a train.py.

Each tunable number becomes one dimension searched in a transformed coordinate where a step means
the same thing anywhere in its range:
- positive floats: log scale, x4 either way of the centre (learning rates, scales, caps);
- fractions (a float in (0, 1) named like FRACTION, MOMENTUM, BETAS, DROPOUT): logit scale,
  x4 in odds either way, so they stay inside (0, 1) and 0.95 moves in steps of 1 - beta;
- a float that is 0 (WEIGHT_DECAY = 0.0): linear in [0, ZERO_SPAN];
- positive ints that are powers of two: powers of two within x4 (it keeps WIDTH divisible by HEADS
  and head dimensions even, which shapes rely on); other positive ints: log scale, x4;
- bools: either value.
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
FRACTION = {"FRACTION", "FRAC", "MOMENTUM", "BETA", "BETAS", "DROPOUT", "PROB", "SHARE", "EMA"}

Kind = Literal["log", "logit", "linear", "pow2", "int", "bool"]


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
        if self.kind == "linear":
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
        if self.kind == "logit":
            p = 1.0 / (1.0 + math.exp(-u))
            return _round(p) if p <= 0.5 else round(1.0 - _round(1.0 - p), 12)
        return _round(math.exp(u))


def derive(reference: dict[str, Knob], centre: dict[str, Knob], seen: list[dict[str, Knob]]) -> list[Dim]:
    """The dimensions: kinds from `reference` (the arena's baseline), ranges around `centre`
    (the best so far) and widened to cover every value in `seen`, so any trial can be told."""
    dims = []
    for knob, value in reference.items():
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
            low, high = _bounds(kind, here)  # type: ignore[arg-type]
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
        half = 1.0 if dim.kind == "pow2" else (ZERO_SPAN / 4 if dim.kind == "linear" else LOCAL)
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
    if isinstance(value, int):
        if value <= 0:
            return None
        return "pow2" if value & (value - 1) == 0 else "int"
    if isinstance(value, float):
        if value == 0.0:
            return "linear"
        if value < 0:
            return None
        return "logit" if value < 1 and FRACTION & set(knob.split("_")) else "log"
    return None  # strings: the optimiser cannot know their alternatives


def _bounds(kind: Kind, u: float | bool) -> tuple[float, float]:
    if kind == "bool":
        return 0.0, 1.0
    if kind == "linear":
        return 0.0, max(ZERO_SPAN, float(u) * 2)
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
