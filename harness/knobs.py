"""The knobs of a train.py: its module-level UPPER_CASE constants whose values are plain literals. FIXED.

=====================================================================================================
The one definition of a knob, for the harness (the sim tier scores knobs) and for the agents (who
read and edit them: agents.knobs). A knob value is an int, float, bool or str literal (a leading
minus sign allowed), or a tuple of those, judged by its syntax: `1e-3`, `-2`, `"cuda"`,
`(0.8, 0.95)`; not `2 ** 10`, `[1]` or None. Anything else is not a knob: no tool may rewrite it.
=====================================================================================================
"""

from __future__ import annotations

import ast
from typing import Any

from harness import syntax
from harness.errors import HarnessError

Knob = int | float | bool | str | tuple[Any, ...]


class KnobError(HarnessError):
    """A train.py whose knobs cannot be read: it does not parse."""


def read(source: str) -> dict[str, Knob]:
    """The knobs of a train.py source, in file order; KnobError when it does not parse."""
    return {name: value for name, (value, _node) in nodes(parse(source)).items()}


def parse(source: str) -> ast.Module:
    try:
        return syntax.parse(source)
    except SyntaxError as exc:
        raise KnobError(f"train.py does not parse: {exc.msg} (line {exc.lineno})") from exc


def nodes(tree: ast.Module) -> dict[str, tuple[Knob, ast.expr]]:
    """Name -> (value, the value's node) for every module-level knob; a later assignment wins."""
    found: dict[str, tuple[Knob, ast.expr]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id.isupper() and _is_literal(value):
            found[target.id] = (ast.literal_eval(value), value)
    return found


def is_knob_value(value: Any) -> bool:
    """Whether `value` is a plain literal a knob may hold."""
    if isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, tuple) and all(is_knob_value(item) and not isinstance(item, tuple) for item in value)


def _is_literal(node: ast.expr) -> bool:
    """A plain literal by its syntax (see the module docstring)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float, bool, str)
    if isinstance(node, ast.Tuple):
        return all(not isinstance(item, ast.Tuple) and _is_literal(item) for item in node.elts)
    return False
