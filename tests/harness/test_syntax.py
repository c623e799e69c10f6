"""Parsing from several threads at once: CPython 3.11's shared AST recursion counter must not bite."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from harness import syntax

SOURCE = (Path(syntax.__file__).parent / "train_gpu.py").read_text()


class _Finalised:
    """Cyclic garbage whose finalizer runs Python code: a collection inside a parse switches threads there."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        sum(range(50))


def test_parses_from_many_threads_never_fail_with_a_recursion_depth_mismatch() -> None:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    failures: list[BaseException] = []

    def parse_often() -> None:
        for _ in range(150):
            for _ in range(200):
                _Finalised()
            try:
                syntax.parse(SOURCE)
            except SystemError as exc:  # "AST constructor recursion depth mismatch" without the lock
                failures.append(exc)
                return

    try:
        threads = [threading.Thread(target=parse_often) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
