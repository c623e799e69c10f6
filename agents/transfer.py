"""Re-applying a change (base -> change) to other code (onto): how a winner climbs the ladder.

A change that only turns knobs is re-applied mechanically, as the same relative change: a knob the
winner doubled is doubled on the other code, whatever its value there (a flag or a string is set
to the winner's value). Any other change is a three-way merge (`git merge-file`) with the base as
the common ancestor: what the winner changed in its parent is merged into the other code. A merge
that conflicts raises NotPortable with where it conflicts; an implementer with an LLM brain may
then port it by hand (roles.implementer), else the transfer is recorded as not transferable.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agents import knobs
from agents.brains.base import BrainError
from harness.knobs import Knob

MERGE_TIMEOUT_SECONDS = 30.0


class NotPortable(BrainError):
    """The change cannot be re-applied mechanically; the message says why."""


@dataclass(frozen=True)
class Ported:
    code: str
    method: str  # knobs | merge


def port(base: str, change: str, onto: str) -> Ported:
    """`onto` with the change from `base` to `change` re-applied; NotPortable when it cannot be."""
    turned = knobs.changes(base, change)
    if turned is not None:
        if not turned:
            raise NotPortable("the winner's code is the same as its parent's: there is no change to re-apply")
        code, method = _relative(knobs.read(base), turned, onto), "knobs"
    else:
        code, method = merge(base, change, onto), "merge"
    if code == onto:
        raise NotPortable("the change is already in the code it would go onto")
    return Ported(code, method)


def _relative(base: dict[str, Knob], turned: dict[str, Knob], onto: str) -> str:
    """The knob changes as the same relative change of `onto`'s values."""
    current = knobs.read(onto)
    missing = sorted(set(turned) - set(current))
    if missing:
        raise NotPortable(f"the code it would go onto has no knob {', '.join(missing)}")
    return knobs.edit(onto, {name: _scaled(base[name], value, current[name]) for name, value in turned.items()})


def _scaled(old: Knob, new: Knob, there: Knob) -> Knob:
    """`there` changed as `old` became `new`: by the same factor, or the same step from 0."""
    if isinstance(old, tuple) and isinstance(new, tuple) and isinstance(there, tuple) and len(old) == len(new) == len(there):
        return tuple(_scaled(o, n, t) for o, n, t in zip(old, new, there))
    numbers = (old, new, there)
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers):
        return new  # a flag, a string, or a shape that differs: the winner's value
    value = there * new / old if old else there + (new - old)  # type: ignore[operator]
    if isinstance(there, int) and isinstance(new, int):
        return max(1, round(value)) if there > 0 else round(value)
    return float(f"{value:.6g}")  # the digits a person would write, not float noise


def merge(base: str, change: str, onto: str) -> str:
    """A three-way merge of `change` into `onto`, `base` their common ancestor; NotPortable on conflict."""
    with tempfile.TemporaryDirectory(prefix="swarm-merge-") as folder:
        paths = []
        for name, text in (("onto", onto), ("base", base), ("change", change)):
            path = Path(folder) / f"{name}.py"
            path.write_text(text)
            paths.append(str(path))
        try:
            done = subprocess.run(["git", "merge-file", "-p", "-L", "upper rung", "-L", "base", "-L", "winner", *paths],
                                  capture_output=True, text=True, timeout=MERGE_TIMEOUT_SECONDS)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NotPortable(f"git merge-file could not run: {exc}") from exc
    if done.returncode < 0 or done.returncode > 127:
        raise NotPortable(f"git merge-file failed ({done.returncode}): {done.stderr.strip()[:500]}")
    if done.returncode > 0:
        raise NotPortable(f"the three-way merge conflicts in {done.returncode} place(s): {_first_conflict(done.stdout)}")
    return done.stdout


def _first_conflict(merged: str) -> str:
    """The first conflicting hunk, short enough for a reason."""
    lines = merged.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("<<<<<<<")), 0)
    end = next((i for i, line in enumerate(lines[start:], start) if line.startswith(">>>>>>>")), start)
    return "\n".join(lines[start : end + 1])[:800]
