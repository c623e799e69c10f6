"""Parsing Python source, one thread at a time. FIXED.

CPython 3.11 (seen on 3.11.7) keeps the recursion depth of its AST constructor in state shared by
every thread. When a garbage collection inside `ast.parse` runs a finalizer and the interpreter
switches threads there, a parse in another thread moves the same counter, and one of the two fails
with "SystemError: AST constructor recursion depth mismatch". The board parses in a worker thread
(normalised code, while applying events) as the event loop parses knobs, so every parse in the
swarm goes through this lock. A parse takes milliseconds; the lock costs nothing measurable.
"""

from __future__ import annotations

import ast
import threading

_ONE_AT_A_TIME = threading.RLock()  # re-entrant: a finalizer may parse in the thread that holds it


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse(source, filename)`, serialised across threads; raises SyntaxError like it."""
    with _ONE_AT_A_TIME:
        return ast.parse(source, filename=filename)
