"""Re-applying a winner's change to other code: knobs as the same relative change, code by a three-way merge."""

from __future__ import annotations

import pytest

from agents import knobs
from agents.transfer import NotPortable, port
from harness import sim

BASE = sim.BASELINE.read_text()


def test_a_knob_change_is_re_applied_as_the_same_relative_change() -> None:
    winner = knobs.edit(BASE, {"MATRIX_LR": 0.06, "DEPTH": 6, "SOFTCAP": 9.4})
    upper = knobs.edit(BASE, {"MATRIX_LR": 0.01, "DEPTH": 2})
    ported = port(BASE, winner, upper)
    assert ported.method == "knobs"
    got = knobs.read(ported.code)
    assert (got["MATRIX_LR"], got["DEPTH"], got["SOFTCAP"]) == (0.02, 3, 9.4)  # x2, x1.5, and the same step
    assert knobs.changes(upper, ported.code) is not None  # nothing but knobs was touched


def test_a_code_change_is_merged_into_code_that_differs_elsewhere() -> None:
    winner = BASE.replace("import math\n", "import math\nimport functools  # the winner's change\n", 1)
    upper = knobs.edit(BASE, {"SOFTCAP": 9.4})
    ported = port(BASE, winner, upper)
    assert ported.method == "merge"
    assert "import functools  # the winner's change" in ported.code and knobs.read(ported.code)["SOFTCAP"] == 9.4


def test_a_merge_that_conflicts_is_not_portable_and_says_where() -> None:
    winner = BASE.replace("import math\n", "import math as m  # the winner's\n", 1)
    upper = BASE.replace("import math\n", "import math as maths  # the upper rung's\n", 1)
    with pytest.raises(NotPortable, match=r"(?s)conflicts in 1 place\(s\).*import math as maths"):
        port(BASE, winner, upper)


def test_a_change_already_in_the_target_is_not_portable() -> None:
    winner = BASE.replace("import math\n", "import math\nimport functools\n", 1)
    with pytest.raises(NotPortable, match="already in the code"):
        port(BASE, winner, winner)
