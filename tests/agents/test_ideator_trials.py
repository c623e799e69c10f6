"""What the ideator tells its brain about each trial: knobs read from its code, and whether it changed code."""

from __future__ import annotations

from agents import knobs
from roles.ideator import _trial
from tests.agents.helpers import BASELINE

ROW = {"title": "t", "status": "ok", "val_bpb": 1.5, "n": 1, "reason": None, "best": False}


def test_a_trial_that_changed_code_is_marked_and_a_knob_turn_is_not() -> None:
    codes = {"p0": BASELINE, "p1": knobs.edit(BASELINE, {"DEPTH": 6}),
             "p2": BASELINE.replace("F.relu(self.up(x)).square()", "F.gelu(self.up(x))")}  # fmt: skip
    turned = _trial({**ROW, "patch": "p1", "parent": "p0"}, codes, {})
    rewritten = _trial({**ROW, "patch": "p2", "parent": "p0"}, codes, {})
    baseline = _trial({**ROW, "patch": "p0", "parent": None}, codes, {})
    assert turned.knobs["DEPTH"] == 6 and not turned.code_change
    assert rewritten.code_change and rewritten.knobs == knobs.read(BASELINE)
    assert not baseline.code_change
