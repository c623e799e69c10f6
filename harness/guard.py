"""The guard: static checks of a train.py (and of a patch) before it costs a run.

Every check reports what it found in words a person can act on, with line numbers, and all
problems are listed at once. The guard is the first line of defence; the training process's
sandbox and the runner's kill are the next ones, so a check here errs on the side of refusing.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from harness import syntax

MAX_BYTES = 100_000  # far above any honest train.py (the baseline is ~8 KB)
MAX_LINES = 2_000
ALLOWED_MODULES = {"torch", "math", "functools", "dataclasses", "typing", "itertools", "collections", "time",
                   "__future__", "harness.contract"}
# THE DENY LIST. harness/contract.py's docstring names every entry of the three lists below (a test
# checks that they agree); change them together.
# torch submodules that load files, build native extensions, or reach other processes or hosts.
DENIED_TORCH = ("torch.hub", "torch.utils.cpp_extension", "torch.package", "torch.serialization",
                "torch.multiprocessing", "torch.distributed", "torch.utils.data", "torch.testing")
DENIED_NAMES = {"open", "eval", "exec", "compile", "__import__", "globals", "vars", "locals", "breakpoint",
                "input", "setattr", "delattr", "memoryview", "exit", "quit"}
# Attributes refused whatever object they hang off (and as getattr/hasattr's constant name), each with
# why: torch's own file, process and native-library entry points; the modules torch itself imports
# (torch.os, torch.sys, torch.ctypes ... are those modules); frames and other interpreter internals.
FILES = "loads or saves files or native code"
MODULES = "is a module torch imports (os, sys, ...): no files, processes or interpreter internals through torch"
FRAMES = "reaches frames or interpreter internals"
NATIVE = "is torch's native or operator-registration internals"
DENIED_ATTRIBUTES: dict[str, str] = {
    **dict.fromkeys(("load", "save", "from_file", "load_library", "load_inline", "load_state_dict_from_url",
                     "cpp_extension", "classes", "hub", "serialization", "package"), FILES),
    **dict.fromkeys(("os", "sys", "ctypes", "subprocess", "importlib", "builtins", "io", "pickle", "marshal", "shutil",
                     "socket", "inspect", "gc", "types", "threading", "multiprocessing", "pathlib", "tempfile",
                     "glob", "platform", "posix", "runpy", "mmap", "resource", "urllib"), MODULES),
    **dict.fromkeys(("_getframe", "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "gi_frame", "gi_code",
                     "cr_frame", "ag_frame", "tb_frame", "tb_next"), FRAMES),
    **dict.fromkeys(("_C", "_ops", "_classes", "_library", "_utils_internal", "_jit_internal", "_export"), NATIVE),
}  # fmt: skip
ALLOWED_DUNDERS = {"__init__", "__name__"}
TRAIN_PATHS = ("train.py", "harness/train.py")


@dataclass(frozen=True)
class GuardReport:
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        """One readable line per problem, prefixed by the count."""
        if self.ok:
            return ""
        return f"guard refused train.py ({len(self.problems)} problem{'s' * (len(self.problems) > 1)}):\n" + "\n".join(
            f"- {p}" for p in self.problems
        )


def check_source(source: str) -> GuardReport:
    """Every static problem of a train.py source."""
    problems: list[str] = []
    if len(source.encode()) > MAX_BYTES:
        problems.append(f"train.py is {len(source.encode())} bytes; the limit is {MAX_BYTES}")
    if source.count("\n") + 1 > MAX_LINES:
        problems.append(f"train.py has {source.count(chr(10)) + 1} lines; the limit is {MAX_LINES}")
    try:
        tree = syntax.parse(source, filename="train.py")
    except SyntaxError as exc:
        return GuardReport(tuple(problems + [f"train.py does not parse: {exc.msg} (line {exc.lineno})"]))
    if not any(isinstance(n, ast.FunctionDef) and n.name == "train" for n in tree.body):
        problems.append("train.py defines no top-level function train(run)")
    problems.extend(_Visitor().check(tree))
    return GuardReport(tuple(problems))


def check_files(changed: list[str]) -> GuardReport:
    """Only train.py may change: refuse a change set naming any other file."""
    others = sorted({p for p in changed if _normal(p) not in TRAIN_PATHS})
    return GuardReport(tuple(f"the patch changes {p}; only train.py may change" for p in others))


def check_diff(diff: str) -> GuardReport:
    """`check_files` for a unified diff (git or plain): every file it touches."""
    paths = []
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            paths.extend(part[2:] for part in line.split()[2:4])
        elif line.startswith(("--- ", "+++ ")):
            name = line[4:].split("\t")[0].strip()
            if name != "/dev/null":
                paths.append(name[2:] if name.startswith(("a/", "b/")) else name)
        elif line.startswith(("rename from ", "rename to ", "copy from ", "copy to ")):
            paths.append(line.split(" ", 2)[2])
    if not paths and diff.strip():
        return GuardReport(("the patch names no file (not a unified diff?)",))
    return check_files(paths)


def _normal(path: str) -> str:
    return re.sub(r"^(\./)+", "", path.strip())


class _Visitor(ast.NodeVisitor):
    """Walks the tree once, collecting problems; `aliases` maps local names to modules."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.aliases: dict[str, str] = {}

    def check(self, tree: ast.AST) -> list[str]:
        self.visit(tree)
        return self.problems

    def refuse(self, node: ast.AST, text: str) -> None:
        self.problems.append(f"line {getattr(node, 'lineno', '?')}: {text}")

    def _module(self, node: ast.AST, name: str) -> None:
        if name.startswith("harness") and name != "harness.contract":
            self.refuse(node, f"imports {name}: of the harness only harness.contract may be imported")
        elif any(name == d or name.startswith(d + ".") for d in DENIED_TORCH):
            self.refuse(node, f"imports {name}: it loads files or code, or reaches other processes")
        elif not (name in ALLOWED_MODULES or name.split(".")[0] == "torch"):
            self.refuse(node, f"imports {name}: allowed are torch, {', '.join(sorted(ALLOWED_MODULES - {'torch'}))}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._module(node, alias.name)
            self.aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            self.refuse(node, "relative imports are not allowed")
            return
        for alias in node.names:
            full = f"{module}.{alias.name}"
            if module == "harness":
                self._module(node, full)
            elif alias.name == "*":
                self.refuse(node, f"from {module} import *: name what you use")
            elif module.split(".")[0] == "torch":
                # `from torch import hub` names a submodule: check the full name.
                self._module(node, full)
                if alias.name in DENIED_ATTRIBUTES:
                    self.refuse(node, f"imports {full}: it {DENIED_ATTRIBUTES[alias.name]}")
            else:
                self._module(node, module)
            self.aliases[alias.asname or alias.name] = full

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in DENIED_NAMES:
            self.refuse(node, f"uses {node.id}(): no file access, dynamic code or reflection")
        elif node.id.startswith("__") and node.id not in ALLOWED_DUNDERS:
            self.refuse(node, f"uses {node.id}: interpreter internals are off limits")

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2:
            name = node.args[1]
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str) and not name.value.startswith("_")):
                self.refuse(node, f"{node.func.id}() with a computed or private name: write the attribute out")
            elif name.value in DENIED_ATTRIBUTES:
                self.refuse(node, f"{node.func.id}(..., {name.value!r}): .{name.value} {DENIED_ATTRIBUTES[name.value]}")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        root = self._root(node.value)
        if attr.startswith("__") and attr.endswith("__"):
            if attr not in ALLOWED_DUNDERS:
                self.refuse(node, f"uses .{attr}: interpreter internals are off limits")
        elif attr in DENIED_ATTRIBUTES:
            self.refuse(node, f"uses .{attr}: it {DENIED_ATTRIBUTES[attr]}")
        elif attr.startswith("_") and root not in ("self", "cls") and not root.startswith("torch"):
            self.refuse(node, f"uses the private attribute .{attr}: run's internals belong to the harness")
        else:
            chain = self._chain(node)
            if any(chain == d or chain.startswith(d + ".") for d in DENIED_TORCH):
                self.refuse(node, f"uses {chain}: it loads files or code, or reaches other processes")
                return  # one finding per chain, not one per prefix of it
        self.generic_visit(node)

    def _chain(self, node: ast.AST) -> str:
        """`torch.hub.load` for a plain attribute chain (through import aliases), else ''."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return ""
        return ".".join([self.aliases.get(node.id, node.id), *reversed(parts)])

    def _root(self, node: ast.AST) -> str:
        """The module or name an attribute chain starts from, through import aliases."""
        while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
            node = node.func if isinstance(node, ast.Call) else node.value
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        return ""
