"""Reading and editing the knobs of a train.py (what a knob is: harness.knobs, the one definition).

`read` finds them, `edit` rewrites their literals in place and leaves every other byte of the file
(comments, spacing, the model code) as it was, and `changes` tells whether one file differs from
another only in knob values. The offline brain edits code with these, and the reviewer's static
rules use them to see whether a patch did more than turn knobs.

Errors here are the brains' (KnobError is a BrainError): a brain that cannot turn a knob says so.
"""

from __future__ import annotations

from typing import Any

from agents.brains.base import BrainError
from harness import knobs as definition
from harness.knobs import Knob, is_knob_value

__all__ = ["Knob", "KnobError", "changes", "edit", "is_knob_value", "read", "render"]


class KnobError(BrainError):
    """A knob change that cannot be made: no such knob, or a value that is not a plain literal."""


def read(source: str) -> dict[str, Knob]:
    """The knobs of a train.py source, in file order; KnobError when it does not parse."""
    try:
        return definition.read(source)
    except definition.KnobError as exc:
        raise KnobError(str(exc)) from exc


def edit(source: str, changes: dict[str, Any]) -> str:
    """`source` with the knobs named in `changes` set to the given values, all else byte for byte.

    Lists given for tuple knobs are taken as tuples (JSON has no tuples, and LLM answers are JSON).
    """
    try:
        found = definition.nodes(definition.parse(source))
    except definition.KnobError as exc:
        raise KnobError(str(exc)) from exc
    unknown = sorted(set(changes) - set(found))
    if unknown:
        raise KnobError(f"no knob named {', '.join(unknown)} in train.py; its knobs are {', '.join(found) or 'none'}")
    # Splice from the end of the file backwards so earlier offsets stay valid; offsets are in
    # UTF-8 bytes (that is what ast reports), so work on bytes: comments may hold non-ASCII.
    data = source.encode()
    starts = _line_starts(data)
    edits = []
    for name, value in changes.items():
        current, node = found[name]
        value = _as_knob(name, value)
        if _same(current, value):
            continue  # keep the author's spelling (3e-4 stays 3e-4)
        start = starts[node.lineno - 1] + node.col_offset
        end = starts[node.end_lineno - 1] + node.end_col_offset  # type: ignore[operator]
        edits.append((start, end, render(value, data[start:end].decode())))
    for start, end, text in sorted(edits, reverse=True):
        data = data[:start] + text.encode() + data[end:]
    return data.decode()


def changes(parent: str, code: str) -> dict[str, Knob] | None:
    """The knob changes that turn `parent` into `code`, or None when `code` differs in anything else.

    An empty dict means the two files are identical.
    """
    try:
        old, new = read(parent), read(code)
    except KnobError:
        return None
    if set(old) != set(new):
        return None
    changed = {name: value for name, value in new.items() if not _same(old[name], value)}
    try:
        rebuilt = edit(parent, changed)
    except KnobError:
        return None
    return changed if rebuilt == code else None


def render(value: Knob, original: str = "") -> str:
    """A knob value as Python source; a string keeps the quote character of `original`."""
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        plain = value.isprintable() and not any(c in value for c in "\"'\\")
        return f'"{value}"' if plain and original.startswith('"') else repr(value)
    items = ", ".join(render(item) for item in value)
    return f"({items},)" if len(value) == 1 else f"({items})"


def _as_knob(name: str, value: Any) -> Knob:
    if isinstance(value, list):
        value = tuple(value)
    if not is_knob_value(value):
        raise KnobError(f"{name} = {value!r}: a knob takes an int, float, bool or str literal, or a tuple of those")
    return value


def _same(a: Knob, b: Knob) -> bool:
    """Equal and of the same kind: 1 and 1.0 and True are different knob values."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _line_starts(data: bytes) -> list[int]:
    """The byte offset where each line starts (ast counts lines from 1, columns in bytes)."""
    starts = [0]
    for line in data.split(b"\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    return starts
