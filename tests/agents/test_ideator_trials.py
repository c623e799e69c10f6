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


def test_each_patch_is_parsed_once_however_many_contexts_hold_it() -> None:
    """A context holds every trial of the arena: building the next one parses only the new trials."""
    from roles.ideator import Parsed

    codes = {"p0": BASELINE, **{f"p{i}": knobs.edit(BASELINE, {"DEPTH": i}) for i in range(1, 21)}}
    rows = [{**ROW, "patch": f"p{i}", "parent": "p0" if i else None} for i in range(21)]
    parsed = Parsed()
    first = [_trial(row, codes, {}, parsed) for row in rows[:11]]
    assert parsed.parses == 11
    again = [_trial(row, codes, {}, parsed) for row in rows]  # ten more trials since
    assert parsed.parses == 21  # not 11 + 21: the history is not parsed again
    assert again[:11] == first and again[20].knobs["DEPTH"] == 20 and not again[20].code_change


def test_a_trial_whose_code_is_not_fetched_yet_is_parsed_again_once_it_is() -> None:
    from roles.ideator import Parsed

    parsed = Parsed()
    row = {**ROW, "patch": "p1", "parent": "p0"}
    assert _trial(row, {"p0": BASELINE}, {}, parsed).knobs == {}
    assert _trial(row, {"p0": BASELINE, "p1": knobs.edit(BASELINE, {"DEPTH": 6})}, {}, parsed).knobs["DEPTH"] == 6
