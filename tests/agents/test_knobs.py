"""agents.knobs: reading the knobs of a train.py and rewriting their literals in place."""

from __future__ import annotations

import pytest

from agents import knobs
from tests.agents.helpers import BASELINE

SOURCE = '''"""A train.py with every kind of knob."""
import math

DEPTH = 4  # blocks: 4 × 128 (a non-ASCII comment before later edits on the line)
LR: float = 3e-4  # annotated
SHIFT = -2  # negative
BETAS = (0.8, 0.95)  # a tuple
ONE = (7,)  # a one-element tuple
USE_BIAS = False  # a bool
COMPILE = "cuda"  # double quotes
MODE = 'fast'  # single quotes
DERIVED = 2 ** 10  # an expression: not a knob
NAMES = ["a"]  # a list: not a knob
lower = 3  # not UPPER_CASE: not a knob


def train(run):
    LOCAL = 5  # not module level
    return DEPTH * math.pi
'''


def test_reads_plain_literals_only() -> None:
    assert knobs.read(SOURCE) == {"DEPTH": 4, "LR": 3e-4, "SHIFT": -2, "BETAS": (0.8, 0.95), "ONE": (7,),
                                  "USE_BIAS": False, "COMPILE": "cuda", "MODE": "fast"}  # fmt: skip


def test_reads_the_baseline() -> None:
    found = knobs.read(BASELINE)
    assert found["MATRIX_LR"] == 0.03 and found["ADAM_BETAS"] == (0.8, 0.95) and found["COMPILE"] == "cuda"
    assert len(found) >= 15


def test_edit_rewrites_only_the_literals() -> None:
    out = knobs.edit(SOURCE, {"DEPTH": 6, "LR": 0.00045, "SHIFT": -3, "BETAS": [0.9, 0.99], "ONE": (8,),
                              "USE_BIAS": True, "COMPILE": "never", "MODE": "slow"})  # fmt: skip
    expected = SOURCE
    for old, new in [("DEPTH = 4", "DEPTH = 6"), ("LR: float = 3e-4", "LR: float = 0.00045"),
                     ("SHIFT = -2", "SHIFT = -3"), ("(0.8, 0.95)", "(0.9, 0.99)"), ("(7,)", "(8,)"),
                     ("USE_BIAS = False", "USE_BIAS = True"), ('"cuda"', '"never"'), ("'fast'", "'slow'")]:  # fmt: skip
        expected = expected.replace(old, new)
    assert out == expected
    assert knobs.read(out)["BETAS"] == (0.9, 0.99)


def test_edit_keeps_every_other_byte_of_the_baseline() -> None:
    out = knobs.edit(BASELINE, {"MATRIX_LR": 0.045, "WARMDOWN_FRACTION": 0.5})
    changed = [(a, b) for a, b in zip(BASELINE.splitlines(True), out.splitlines(True)) if a != b]
    assert [b for _, b in changed] == [
        "MATRIX_LR = 0.045  # Muon learning rate for the 2-D weights of the blocks\n",
        "WARMDOWN_FRACTION = 0.5  # linear decay to zero over the last 40%: cheap gain for short budgets\n",
    ]
    assert len(out.splitlines()) == len(BASELINE.splitlines())
    assert knobs.edit(out, {"MATRIX_LR": 0.03, "WARMDOWN_FRACTION": 0.4}) == BASELINE


def test_edit_with_no_changes_is_the_identity() -> None:
    assert knobs.edit(SOURCE, {}) == SOURCE
    assert knobs.edit(SOURCE, knobs.read(SOURCE)) == SOURCE


def test_unknown_knob_is_a_clear_error() -> None:
    with pytest.raises(knobs.KnobError, match="no knob named DERIVED, NOPE.*its knobs are DEPTH"):
        knobs.edit(SOURCE, {"NOPE": 1, "DERIVED": 2})


@pytest.mark.parametrize("value", [None, [[1, 2]], {"a": 1}, 1j, object()])
def test_non_literal_value_is_a_clear_error(value: object) -> None:
    with pytest.raises(knobs.KnobError, match="DEPTH = .*a knob takes an int, float, bool or str literal"):
        knobs.edit(SOURCE, {"DEPTH": value})


def test_a_file_that_does_not_parse_is_a_knob_error() -> None:
    with pytest.raises(knobs.KnobError, match="does not parse"):
        knobs.read("DEPTH = (\n")


def test_changes_tells_knob_edits_from_code_edits() -> None:
    edited = knobs.edit(BASELINE, {"DEPTH": 6, "ADAM_BETAS": (0.9, 0.95)})
    assert knobs.changes(BASELINE, edited) == {"DEPTH": 6, "ADAM_BETAS": (0.9, 0.95)}
    assert knobs.changes(BASELINE, BASELINE) == {}
    assert knobs.changes(BASELINE, edited.replace("F.relu(", "F.gelu(")) is None
    assert knobs.changes(BASELINE, edited + "# a comment\n") is None
    assert knobs.changes(BASELINE, BASELINE.replace("DEPTH = 4", "DEPTH = 4.0")) == {"DEPTH": 4.0}
