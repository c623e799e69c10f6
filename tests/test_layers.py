"""The floors of the house: no module imports a package above it (ARCHITECTURE.md, Layout).

The fixed harness stands alone at the bottom; the ground (`swarm.ground`: errors, settings,
constants, asyncio helpers, the bus) stands on the harness only; the board and the agents stand on
the ground; the roles on the agents; the face (the rest of `swarm`) on everything. Imports inside
functions count too: a late import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "swarm", "blackboard", "agents", "roles")
MAY_IMPORT = {
    "harness": {"harness"},
    "ground": {"ground", "harness"},
    "blackboard": {"blackboard", "ground", "harness"},
    "agents": {"agents", "blackboard", "ground", "harness"},
    "roles": {"roles", "agents", "blackboard", "ground", "harness"},
    "face": {"face", "roles", "agents", "blackboard", "ground", "harness"},
}


def floor(module: str) -> str | None:
    """The floor a dotted module name stands on; None for anything not of this project."""
    top = module.split(".")[0]
    if top not in PACKAGES:
        return None
    if top == "swarm":
        return "ground" if module == "swarm.ground" or module.startswith("swarm.ground.") else "face"
    return top


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file of `module`, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from swarm import aio` imports swarm.aio: judge each name as a submodule where one exists
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = (ROOT / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    ROOT / candidate.replace(".", "/") / "__init__.py").exists()  # fmt: skip
                found.append((node.lineno, candidate if is_module else base))
    return found


def project_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def violations(modules: list[tuple[Path, str]]) -> list[str]:
    found = []
    for path, module in modules:
        mine = floor(module)
        assert mine is not None
        for line, name in imported(path, module):
            theirs = floor(name)
            if theirs is not None and theirs not in MAY_IMPORT[mine]:
                found.append(f"{module}:{line}: the {mine} imports {name} (the {theirs})")
    return found


def test_no_module_imports_a_package_above_it() -> None:
    assert violations([(path, module_name(path)) for path in project_modules()]) == []


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The rule would pass on a walk that sees nothing: each of these must be found, and refused."""
    path = tmp_path / "probe.py"
    path.write_text("import swarm.up\nfrom swarm import __version__\nfrom swarm.ground import bus\n"
                    "from . import runner\n\ndef late():\n    from roles import ROLES\n")  # fmt: skip
    names = [name for _line, name in imported(path, "harness.probe")]
    assert names == ["swarm.up", "swarm", "swarm.ground.bus", "harness.runner", "roles"]
    assert [floor(n) for n in names] == ["face", "face", "ground", "harness", "roles"]
    assert len(violations([(path, "harness.probe")])) == 4
    assert violations([(path, "swarm.cli.probe")]) == []  # the face may import anything


@pytest.mark.parametrize("package", ["harness", "swarm", "swarm/ground", "blackboard", "agents", "roles"])
def test_each_package_says_what_it_is_and_what_it_may_import(package: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text())) or ""
    assert doc and "import" in doc, f"{package}/__init__.py: say what the package is and what it may import"
