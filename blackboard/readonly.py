"""Whether a piece of SQL only reads the board: DuckDB's own parser decides, never a regex.

A query passes when it is exactly one statement of type SELECT (WITH ... SELECT, VALUES, FROM-first
and DESCRIBE/SUMMARIZE of a query included) and its syntax tree, as DuckDB serialises it
(`json_serialize_sql`), names nothing outside the board:
- every table it names is one of the projection's tables or views, or a CTE in scope there
  (a name DuckDB does not know as a table would be a replacement scan: `FROM '/etc/passwd'`,
  `FROM 'https://...'`, a Python variable);
- every table function is on a small allow-list (`range`, `generate_series`, `unnest`): the others
  read files, the network, settings, secrets, or run SQL of their own (`read_csv`, `read_text`,
  `glob`, `query`, `duckdb_settings`, ...);
- no scalar function with a side effect or a view of the process (`setseed`, `nextval`,
  `current_setting`, `getvariable`, `write_log`, ...);
- no node of a kind this module does not know (a newer DuckDB's new syntax is refused, not trusted).
Statement types other than SELECT (INSERT, UPDATE, DELETE, COPY, ATTACH, DETACH, INSTALL, LOAD,
PRAGMA, SET, CREATE, DROP, EXPORT, CALL, EXPLAIN...) and several statements are refused outright.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection
from typing import Any

import duckdb

from blackboard import schema
from swarm.ground.errors import BoardError

TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
REFUSED_FUNCTIONS = frozenset({
    "setseed", "nextval", "currval", "setval", "write_log", "current_setting", "getvariable", "getenv",
    "current_query", "json_execute_serialized_sql", "json_deserialize_sql", "json_serialize_sql",
})  # fmt: skip

# The structural nodes of a SELECT's tree (nodes with a "type" and no expression "class").
_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}
_TABLE_REFS = {"BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION", "EMPTY", "EXPRESSION_LIST", "PIVOT", "SHOW_REF"}
_MODIFIERS = {"ORDER_MODIFIER", "LIMIT_MODIFIER", "LIMIT_PERCENT_MODIFIER", "DISTINCT_MODIFIER"}
_ORDERS = {"ORDER_DEFAULT", "ASCENDING", "DESCENDING"}
_KNOWN = _QUERY_NODES | _TABLE_REFS | _MODIFIERS | _ORDERS


class QueryRefused(BoardError):
    """SQL that is not a single read-only SELECT over the board's tables."""


_parser = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
_parser_lock = threading.Lock()  # a DuckDB connection serves one thread at a time


def check_read_only(sql: str, names: Collection[str] = schema.NAMES) -> str:
    """The one SELECT statement in `sql`, or QueryRefused saying why it may not run.

    `names` are the tables and views a query may read (the projection's, by default).
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"query refused: DuckDB cannot parse it: {exc}") from exc
    if not statements:
        raise QueryRefused("query refused: there is no statement in it")
    if len(statements) > 1:
        raise QueryRefused(f"query refused: one statement at a time, this is {len(statements)}")
    [statement] = statements
    if statement.type != duckdb.StatementType.SELECT:
        raise QueryRefused(f"query refused: {statement.type.name} statements change or leave the board; only SELECT reads")
    with _parser_lock:
        (text,) = _parser.execute("SELECT json_serialize_sql(?)", [statement.query]).fetchone()  # type: ignore[misc]
    tree = json.loads(text)
    if tree.get("error"):
        raise QueryRefused(f"query refused: its structure cannot be checked: {tree.get('error_message')}")
    _Walk({name.lower() for name in names}).visit(tree["statements"], frozenset())
    return statement.query


class _Walk:
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def visit(self, node: Any, scope: frozenset[str]) -> None:
        if isinstance(node, list):
            for item in node:
                self.visit(item, scope)
            return
        if not isinstance(node, dict):
            return
        if isinstance(node.get("type"), str) and "class" not in node:
            self.check_structure(node, scope)
        if node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() in REFUSED_FUNCTIONS:
            raise QueryRefused(f"query refused: function {node['function_name']}() is not for queries")
        for key, value in node.items():
            if key == "cte_map":
                scope = self.visit_ctes(value.get("map", []) if isinstance(value, dict) else [], scope)
        for key, value in node.items():
            if key != "cte_map":
                self.visit(value, scope)

    def visit_ctes(self, ctes: list[dict[str, Any]], scope: frozenset[str]) -> frozenset[str]:
        """CTEs see the ones defined before them, and themselves only when truly recursive: a
        non-recursive CTE naming itself reads whatever that name is outside (a file, say)."""
        for cte in ctes:
            name = str(cte["key"]).lower()
            body = cte["value"]
            recursive = body.get("query_node", {}).get("type") == "RECURSIVE_CTE_NODE"
            self.visit(body, scope | {name} if recursive else scope)
            scope = scope | {name}
        return scope

    def check_structure(self, node: dict[str, Any], scope: frozenset[str]) -> None:
        kind = node["type"]
        if kind not in _KNOWN:
            raise QueryRefused(f"query refused: {kind} is not something this board's check knows to be safe")
        if kind == "BASE_TABLE":
            name = str(node.get("table_name", "")).lower()
            qualified = node.get("catalog_name") or node.get("schema_name", "") not in ("", "main")
            if qualified or node.get("at_clause") or (name not in self.names and name not in scope):
                shown = ".".join(str(node[k]) for k in ("catalog_name", "schema_name", "table_name") if node.get(k))
                raise QueryRefused(f"query refused: {shown!r} is not a table of the board")
        elif kind == "TABLE_FUNCTION":
            function = node.get("function", {})
            name = str(function.get("function_name", "")).lower()
            if name not in TABLE_FUNCTIONS or function.get("catalog") or function.get("schema"):
                allowed = ", ".join(sorted(TABLE_FUNCTIONS))
                raise QueryRefused(f"query refused: table function {name}() reads outside the board (allowed: {allowed})")
        elif kind == "SHOW_REF" and node.get("query") is None:
            raise QueryRefused("query refused: SHOW lists the database, not the board; DESCRIBE a table instead")
