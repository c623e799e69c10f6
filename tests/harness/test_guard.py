"""The guard's static checks: what it refuses, with readable reasons, and what it lets through."""

from __future__ import annotations

import re

import pytest

from harness import guard
from tests.harness.conftest import BASELINE

OK_HEADER = "import torch\nfrom harness.contract import Run\n\ndef train(run: Run):\n"


def problems(body: str, header: str = OK_HEADER) -> tuple[str, ...]:
    return guard.check_source(header + body).problems


def test_the_baseline_passes() -> None:
    assert guard.check_source(BASELINE).ok


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("    import os\n", "imports os"),
        ("    import subprocess\n", "imports subprocess"),
        ("    import socket\n", "imports socket"),
        ("    import ctypes\n", "imports ctypes"),
        ("    import importlib\n", "imports importlib"),
        ("    import pickle\n", "imports pickle"),
        ("    from pathlib import Path\n", "imports pathlib"),
        ("    import torch.hub\n", "imports torch.hub"),
        ("    from torch.utils import cpp_extension\n", "imports torch.utils.cpp_extension"),
        ("    from harness import prepare\n", "only harness.contract"),
        ("    from harness.evaluate import evaluate\n", "only harness.contract"),
        ("    open('x')\n", "uses open()"),
        ("    eval('1')\n", "uses eval()"),
        ("    exec('1')\n", "uses exec()"),
        ("    compile('1', 'f', 'exec')\n", "uses compile()"),
        ("    __import__('os')\n", "uses __import__()"),
        ("    globals()\n", "uses globals()"),
        ("    vars(run)\n", "uses vars()"),
        ("    train.__globals__\n", ".__globals__"),
        ("    ().__class__.__subclasses__()\n", ".__subclasses__"),
        ("    __builtins__\n", "uses __builtins__"),
        ("    torch.load('w.pt')\n", "uses .load"),
        ("    torch.save(run, 'w.pt')\n", "uses .save"),
        ("    torch.UntypedStorage.from_file('x')\n", "uses .from_file"),
        ("    torch.ops.load_library('x.so')\n", "uses .load_library"),
        ("    run._tokens\n", "private attribute ._tokens"),
        ("    r = run\n    r._budget_tokens = 10**12\n", "private attribute ._budget_tokens"),
        ("    getattr(run, '_tokens')\n", "getattr()"),
        ("    getattr(run, name)\n", "getattr()"),
        ("    getattr(torch.UntypedStorage, 'from_file')('x')\n", "getattr(..., 'from_file'): .from_file loads"),
        ("    hasattr(torch, 'sys')\n", "hasattr(..., 'sys')"),
        ("    torch.os.system('x')\n", "uses .os: it is a module torch imports"),
        ("    torch.sys.modules['builtins'].open('x')\n", "uses .sys: it is a module torch imports"),
        ("    torch.ctypes.CDLL(None)\n", "uses .ctypes"),
        ("    torch.sys._getframe(1).f_globals\n", "uses ._getframe: it reaches frames"),
        ("    (x for x in ()).gi_frame.f_back\n", "uses .gi_frame: it reaches frames"),
        ("    torch._C._jit_get_operation('aten::add')\n", "uses ._C: it is torch's native"),
        ("    torch.classes.load_library('x.so')\n", "uses .classes"),
        ("    torch.utils.cpp_extension.load_inline('m', 'x')\n", "uses .cpp_extension"),
        ("    torch.hub.download_url_to_file('u', 'f')\n", "uses torch.hub.download_url_to_file"),
        ("    import torch.utils\n    torch.utils.data.DataLoader\n", "uses torch.utils.data.DataLoader"),
        ("    from torch import serialization\n", "imports torch.serialization"),
    ],
)
def test_refuses_with_a_reason(body: str, needle: str) -> None:
    found = problems(body)
    assert any(needle in p for p in found), found
    assert all(p.startswith("line ") for p in found)


def test_lists_every_problem_not_just_the_first() -> None:
    report = guard.check_source(OK_HEADER + "    import os\n    open('a')\n    eval('1')\n")
    assert len(report.problems) == 3
    assert report.reason.startswith("guard refused train.py (3 problems):")
    assert "line 5" in report.reason and "line 6" in report.reason and "line 7" in report.reason


def test_refuses_what_does_not_parse_or_has_no_train() -> None:
    assert "does not parse" in guard.check_source("def train(run:\n").reason
    assert "no top-level function train(run)" in guard.check_source("import torch\n").reason


def test_refuses_oversized_files() -> None:
    report = guard.check_source(OK_HEADER + "    pass\n" + "# padding\n" * 3000)
    assert any("lines; the limit" in p for p in report.problems)
    report = guard.check_source(OK_HEADER + "    pass\n" + "#" * (guard.MAX_BYTES + 1))
    assert any("bytes; the limit" in p for p in report.problems)


def test_allows_ordinary_research_code() -> None:
    body = (
        "    import math, functools, itertools, collections, dataclasses, typing, time\n"
        "    import torch.nn.functional as F\n"
        "    torch._dynamo.config.cache_size_limit = 64\n"
        "    model = torch.nn.Linear(2, 2)\n"
        "    getattr(model, 'weight')\n"
        "    for m in model.modules():\n        m.eval()\n"
        "    torch.signal.windows.hann(8)\n"
        "    return model\n"
    )
    assert problems(body) == ()
    assert guard.check_source("class A:\n    def __init__(self):\n        self._x = 1\n        super().__init__()\n\ndef train(run):\n    return A()\n").ok


def test_only_train_py_may_change() -> None:
    assert guard.check_files(["harness/train.py"]).ok
    assert guard.check_files(["train.py"]).ok
    report = guard.check_files(["train.py", "harness/evaluate.py"])
    assert report.problems == ("the patch changes harness/evaluate.py; only train.py may change",)


def test_a_diff_touching_another_file_is_refused() -> None:
    good = "--- a/harness/train.py\n+++ b/harness/train.py\n@@ -1 +1 @@\n-DEPTH = 4\n+DEPTH = 6\n"
    assert guard.check_diff(good).ok
    bad = good + "diff --git a/harness/evaluate.py b/harness/evaluate.py\n--- a/harness/evaluate.py\n+++ b/harness/evaluate.py\n"
    assert any("harness/evaluate.py" in p for p in guard.check_diff(bad).problems)
    created = "--- /dev/null\n+++ b/sitecustomize.py\n@@ -0,0 +1 @@\n+import os\n"
    assert "sitecustomize.py" in guard.check_diff(created).reason
    assert not guard.check_diff("this is not a diff").ok


def test_the_contract_names_the_whole_deny_list() -> None:
    """The contract's docstring and the guard's rules are one list: each name appears in both."""
    from harness import contract

    doc = contract.__doc__ or ""

    def listed(label: str) -> set[str]:
        found = re.search(rf"{re.escape(label)}[^:]*:(.*?)\.\n", doc, re.S)
        assert found, label
        return {word.strip() for word in found.group(1).replace("\n", " ").split(",")}

    assert listed("denied torch modules") == set(guard.DENIED_TORCH)
    assert listed("denied names") == guard.DENIED_NAMES
    assert listed("denied attributes") == set(guard.DENIED_ATTRIBUTES)
