"""Rows for a person or a program: a rich table, CSV or JSON, the same rows either way.

Values are what the board's readers return (`blackboard.queries`): text, numbers, booleans, None,
lists, maps, and bytes. JSON carries them as they are (bytes as base64); CSV and tables show lists
and maps as JSON text.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "csv", "json")


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; the board stores none either (see blackboard.projection)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_json(value: Any) -> str:
    """Indented JSON of a reader's answer, keys in the order the board gave them."""
    return json.dumps(_plain(value), indent=2, ensure_ascii=False, default=str)


def cell(value: Any) -> str:
    """One value as text in a cell: None is empty, containers are JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict, bytes)):
        return json.dumps(_plain(value), ensure_ascii=False)
    return str(value)


def unique_names(columns: Sequence[str]) -> list[str]:
    """Column names made unique the way DuckDB does for a table (`a`, `a_1`), so JSON keys don't collide."""
    seen: set[str] = set()
    names = []
    for name in columns:
        unique, n = name, 0
        while unique in seen:
            n += 1
            unique = f"{name}_{n}"
        seen.add(unique)
        names.append(unique)
    return names


def records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    names = unique_names(columns)
    return [dict(zip(names, row)) for row in rows]


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> Table:
    """A rich table of text cells (rows may hold `rich.text.Text` for colour)."""
    shown = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        shown.add_column(name, overflow="fold")
    for row in rows:
        shown.add_row(*(value if isinstance(value, Text) else cell(value) for value in row))
    return shown


def emit(console: Console, columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str,
         title: str | None = None) -> None:  # fmt: skip
    """Print rows as `fmt` (one of FORMATS) on `console`."""
    if fmt == "json":
        console.print(to_json(records(columns, rows)), markup=False, highlight=False, soft_wrap=True)
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([cell(value) for value in row] for row in rows)
        console.file.write(buffer.getvalue())
    else:
        console.print(table(columns, rows, title))
