"""The board's rules: normalised code and ideas, dedup keys, seed spread and the promotion verdict."""

from __future__ import annotations

import functools
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackboard.rules import (
    CodeError,
    Verdict,
    code_hash,
    futility,
    idea_key,
    is_candidate,
    normalize_code,
    normalize_text,
    promotion_verdict,
    seed_spread,
)
from swarm.ground.errors import BoardError

TRAIN = '''"""A tiny GPT: the editable baseline."""

import math

# --- hyperparameters ---
LR = 0.02  # Adam learning rate
N_LAYER = 4  # depth
WARMUP = (100)


class Block:
    """One transformer block."""

    def __init__(self, dim: int) -> None:
        """Make it."""
        self.dim = dim  # width

    def forward(self, x):
        return x * math.sqrt(self.dim) + LR


def schedule(step: int) -> float:
    if step < WARMUP:
        return step / WARMUP
    else:
        "a string used as a comment"
        return 1.0
'''

RESTYLED = """import math
LR = 0.02
N_LAYER = 4
WARMUP = 100
class Block:
    def __init__(self, dim: int) -> None: self.dim = dim
    def forward(self, x):
        return (x * math.sqrt(self.dim)) + LR
def schedule(step: int) -> float:
    if step < WARMUP:
        return (step / WARMUP)
    else:
        return 1.0
"""


# --- code ---------------------------------------------------------------------------------------


def test_code_differing_only_in_comments_docstrings_layout_quotes_and_parens_hashes_equal() -> None:
    assert code_hash(TRAIN) == code_hash(RESTYLED)
    assert code_hash("x = 'a'  # c\n") == code_hash('x = "a"\n\n\n')


def test_any_semantic_change_hashes_differently() -> None:
    assert code_hash(TRAIN) != code_hash(TRAIN.replace("LR = 0.02", "LR = 0.03"))
    assert code_hash(TRAIN) != code_hash(TRAIN.replace("step / WARMUP", "step // WARMUP"))
    assert code_hash("x = 'a'") != code_hash("x = 'b'")  # a string that is a value, not a docstring


def test_normalised_code_has_no_comments_or_docstrings_and_still_runs() -> None:
    code = normalize_code(TRAIN)
    assert "#" not in code and "baseline" not in code and "Make it" not in code
    namespace: dict[str, object] = {}
    exec(compile(code, "train.py", "exec"), namespace)  # a docstring-only body became `pass`
    assert namespace["schedule"](50) == 0.5  # type: ignore[operator]


def test_a_body_of_only_a_docstring_becomes_pass() -> None:
    assert normalize_code('def f():\n    """Nothing."""\n') == "def f():\n    pass"


@pytest.mark.parametrize("source", ["def f(:\n", "x = \x00", "(" * 300 + ")" * 300, "+".join(["1"] * 50_000)])
def test_code_that_does_not_parse_raises_a_board_error(source: str) -> None:
    with pytest.raises(CodeError, match="^code"):
        code_hash(source)
    assert issubclass(CodeError, BoardError)


# Sources built from lines that are safe to separate by comments and blank lines anywhere.
_names = st.sampled_from(["LR", "N_LAYER", "WARMUP", "dim", "x"])
_values = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False), st.text(max_size=8))
_assignments = st.builds(lambda n, v: f"{n} = {v!r}", _names, _values)
_sources = st.lists(_assignments, min_size=1, max_size=12).map(lambda lines: "\n".join(lines) + "\n")


@given(_sources)
def test_normalisation_is_idempotent(source: str) -> None:
    once = normalize_code(source)
    assert normalize_code(once) == once


@given(st.data())
def test_hash_is_invariant_under_inserting_comments_and_blank_lines(data: st.DataObject) -> None:
    lines = TRAIN.splitlines()
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(lines)))
        indent = data.draw(st.sampled_from(["", "    ", "\t"]))
        text = data.draw(st.text(st.characters(blacklist_categories=["Cc", "Cs"]), max_size=20))
        lines.insert(at, data.draw(st.sampled_from(["", f"{indent}# {text}", indent])))
    assert code_hash("\n".join(lines)) == code_hash(TRAIN)


# --- ideas --------------------------------------------------------------------------------------


def test_text_is_casefolded_nfkc_and_collapsed() -> None:
    assert normalize_text("  Raise\tthe LR,  (a lot)!! ") == "raise the lr a lot"
    assert normalize_text("ＬＲ ﬁx") == "lr fix"  # fullwidth letters and ligatures fold under NFKC
    assert normalize_text("n_layer=4") == normalize_text("N LAYER 4.0")


def test_numbers_are_spelled_one_way() -> None:
    assert normalize_text("lr 0.020") == normalize_text("lr 0.02") == normalize_text("LR=2e-2")
    assert normalize_text("lr 0.02") != normalize_text("lr 0.03")


def test_ideas_differing_in_form_share_a_key() -> None:
    one = idea_key("tiny/cpu/abc", "p-1", "Raise the LR", {"knobs": {"LR": 0.020, "WARMUP": 100}})
    two = idea_key("tiny/cpu/abc", "p-1", "raise the lr!", {"knobs": {"warmup": 100.0, "lr": 2e-2}})
    assert one == two and len(one) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"arena": "tiny/cpu/other"},
        {"parent": "p-2"},
        {"parent": None},
        {"title": "Lower the LR"},
        {"intent": {"knobs": {"LR": 0.03}}},
        {"intent": {"knobs": {"LR": 0.02}, "code": "swap relu for gelu"}},
    ],
)
def test_ideas_differing_in_substance_have_different_keys(change: dict) -> None:
    base = {"arena": "tiny/cpu/abc", "parent": "p-1", "title": "Raise the LR", "intent": {"knobs": {"LR": 0.02}}}
    assert idea_key(**base) != idea_key(**{**base, **change})


def test_intent_with_odd_values_still_keys() -> None:
    odd = {"b": b"\x00\xff", "n": None, "big": 10**400, "ok": True}
    key = idea_key("a", None, "t", odd)
    assert len(key) == 64 and int(key, 16) >= 0 and key == idea_key("a", None, "t", dict(odd))
    assert key != idea_key("a", None, "t", {**odd, "b": b"\x00\xfe"}), "bytes key by their value"
    assert key != idea_key("a", None, "t", {**odd, "ok": None}), "True and None are different intents"


# --- seed spread ------------------------------------------------------------------------------


def test_seed_spread_pools_the_within_group_variance() -> None:
    groups = [[1.0, 1.2], [2.0, 2.1, 2.2], [5.0]]  # the singleton says nothing about noise
    squares = 0.02 + 0.02
    assert seed_spread(groups) == pytest.approx(math.sqrt(squares / 3))
    assert seed_spread([[1.0, 1.2]]) == pytest.approx(statistics.stdev([1.0, 1.2]))


def test_seed_spread_is_none_without_a_repeated_code() -> None:
    assert seed_spread([]) is None
    assert seed_spread([[1.0], [2.0], [3.0, math.nan]]) is None


# --- promotion -------------------------------------------------------------------------------


def verdict(candidate: list[float], best: list[float], spread: float | None = 0.005, **kw: object) -> Verdict:
    args: dict = {"seeds": 3, "min_delta": 0.002, "z": 2.0, "review": "approve"} | kw
    return promotion_verdict(candidate, best, spread, **args)


BEST = [1.8251, 1.8301, 1.8351]
GOOD = [1.8073, 1.8123, 1.8173]


def test_a_candidate_beating_the_best_by_more_than_the_noise_is_promoted_with_a_readable_reason() -> None:
    v = verdict(GOOD, BEST, min_delta=0.01)
    assert v.promote and v.outcome == "promoted"
    assert v.threshold == pytest.approx(0.01) and v.n == 3 and v.spread == 0.005
    assert v.mean == pytest.approx(1.8123) and v.std == pytest.approx(0.005) and v.best_mean == pytest.approx(1.8301)
    assert v.explanation == "mean 1.8123 over 3 seeds beats the best's 1.8301 by 0.0178 > threshold 0.0100 = 2.0 x spread 0.0050"


def test_threshold_is_min_delta_when_the_noise_is_smaller() -> None:
    v = verdict(GOOD, BEST, spread=0.0001)
    assert v.threshold == 0.002 and "min_delta" in v.explanation


def test_a_gain_within_the_noise_is_not_better() -> None:
    v = verdict([x - 0.009 for x in BEST], BEST, spread=0.005)  # gain 0.009 <= 2 x 0.005
    assert not v.promote and v.outcome == "not_better" and "by only 0.0090 <= threshold 0.0100" in v.explanation
    worse = verdict([x + 0.01 for x in BEST], BEST)
    assert worse.outcome == "not_better" and "worse" in worse.explanation


def test_a_candidate_whose_remaining_seeds_could_not_plausibly_win_is_hopeless() -> None:
    best, spread = [2.00, 2.01, 1.99], 0.01  # a promotion needs a mean below 2.00 - 2 x 0.01 = 1.98
    hopeless = functools.partial(futility, best=best, spread=spread, seeds=3, min_delta=0.002, z=2.0, futility_z=3.0)
    assert hopeless([1.99]) is None  # its two others averaging 1.975 is within reach of 1.99
    why = hopeless([1.99, 2.03])  # its last would need 1.92: 7.3 predicted spreads below its mean 2.01
    assert why is not None and why.startswith("stopped after 2 of 3 seeds: mean 2.0100") and "average 1.9200" in why
    assert hopeless([1.99, 1.985]) is None  # 1.965 for the last: a 1.8-spread stretch, not hopeless
    assert hopeless([1.99, 2.03], futility_z=0) is None  # switched off
    assert hopeless([1.99, 2.03], spread=None) is None  # no measured noise: nothing to judge by
    assert hopeless([1.99, 2.03, 2.0]) is None  # every seed in: the promotion rule decides


def test_too_few_ok_runs_fail() -> None:
    v = verdict([1.70, math.nan], BEST)
    assert v.outcome == "failed" and not v.promote and v.n == 1
    assert v.explanation == "1 ok run of the 3 seeds a promotion needs"
    assert math.isnan(verdict([], BEST).mean)


def test_a_rejection_decides_first_and_an_approval_last() -> None:
    assert verdict(GOOD, BEST, review=None).outcome == "awaiting_review"
    assert verdict(GOOD, BEST, review="reject").outcome == "rejected_in_review"
    assert verdict([1.70], BEST, review="reject").outcome == "rejected_in_review"  # its replications were cancelled
    assert verdict([x + 0.01 for x in BEST], BEST, review=None).outcome == "not_better"  # no reviewer needed to say no


def test_without_an_arena_spread_the_runs_own_spread_is_used() -> None:
    v = verdict(GOOD, BEST, spread=None)
    assert v.spread == pytest.approx(0.005) and v.threshold == pytest.approx(0.01)
    assert "these runs' spread" in v.explanation
    single = verdict([1.70], [1.80], spread=None, seeds=1)
    assert single.spread is None and single.threshold == 0.002 and single.promote


def test_the_first_best_of_an_arena_needs_only_its_seeds() -> None:
    v = verdict(BEST, [], review=None)
    assert v.promote and v.best_mean is None and "first best" in v.explanation


@settings(max_examples=200)
@given(
    st.lists(st.floats(1.0, 3.0), min_size=1, max_size=6),
    st.lists(st.floats(1.0, 3.0), min_size=1, max_size=6),
    st.floats(0.0, 0.5),
    st.one_of(st.none(), st.floats(0.0, 0.05)),
    st.sampled_from([None, "approve", "reject"]),
)
def test_verdict_is_monotone_in_the_candidate_mean(
    candidate: list[float], best: list[float], shift: float, spread: float | None, review: str | None
) -> None:
    """Lowering every candidate run (same spread, better mean) never turns a promotion into a refusal."""
    kw = {"seeds": 1, "min_delta": 0.002, "z": 2.0, "review": review}
    worse = promotion_verdict(candidate, best, spread, **kw)  # type: ignore[arg-type]
    better = promotion_verdict([x - shift for x in candidate], best, spread, **kw)  # type: ignore[arg-type]
    assert better.promote or not worse.promote


def test_a_single_result_is_a_candidate_when_it_beats_the_best_by_min_delta() -> None:
    assert is_candidate(1.80, 1.81, 0.002)
    assert is_candidate(1.808, 1.81, 0.002)
    assert not is_candidate(1.809, 1.81, 0.002)
    assert not is_candidate(math.nan, 1.81, 0.002)
