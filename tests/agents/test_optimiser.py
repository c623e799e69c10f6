"""The offline optimiser: its search space, and that it finds better knobs on harness.sim."""

from __future__ import annotations

import math
import time

from agents import knobs
from agents.brains import space
from agents.brains.base import ImplementTask, Trial
from agents.brains.offline import OfflineBrain
from agents.brains.optimiser import Optimiser
from harness import sim
from harness.knobs import read as read_knobs
from tests.agents.helpers import BASELINE, baseline_trial, context

ROUNDS = 30
SEEDS = 3  # the promotion rule's replication: a candidate's mean over this many seeds
MIN_DELTA = 0.002  # the board's default: a gain smaller than this is not a gain


def dims() -> dict[str, space.Dim]:
    base = knobs.read(BASELINE)
    return {d.name: d for d in space.derive(base, base, [])}


def test_space_skips_plumbing_and_keeps_fractions_inside_zero_one() -> None:
    found = dims()
    assert "LOG_EVERY" not in found and "COMPILE" not in found
    assert found["WIDTH"].kind == "pow2" and found["MATRIX_LR"].kind == "log" and found["WEIGHT_DECAY"].kind == "linear"
    for name in ("MUON_MOMENTUM", "ADAM_BETAS[0]", "ADAM_BETAS[1]"):
        dim = found[name]
        assert dim.kind == "logit"
        assert 0 < dim.from_unit(dim.low) < dim.from_unit(dim.high) < 1
    for name in ("WARMUP_FRACTION", "WARMDOWN_FRACTION"):
        dim = found[name]
        assert dim.kind == "share" and 0 <= dim.from_unit(dim.low) < dim.from_unit(dim.high) <= 1
    assert {found["WIDTH"].from_unit(u) for u in (found["WIDTH"].low, found["WIDTH"].high)} == {32, 512}


def test_a_warm_up_can_be_switched_off() -> None:
    warmup = dims()["WARMUP_FRACTION"]  # 0.05 in the baseline
    assert warmup.from_unit(warmup.low) == 0.0
    assert warmup.from_unit(warmup.to_unit(0.05)) == 0.05 and warmup.high == 0.2


def test_a_depth_that_is_a_power_of_two_can_become_any_integer() -> None:
    depth = dims()["DEPTH"]  # 4 in the baseline: a count, not a shape
    assert depth.kind == "int"
    reachable = {depth.from_unit(depth.low + (depth.high - depth.low) * i / 200) for i in range(201)}
    assert {3, 4, 5, 6, 7} <= reachable and reachable <= set(range(1, 17))


def test_seq_len_never_falls_below_the_evaluation_length() -> None:
    base = knobs.read(BASELINE)  # SEQ_LEN = 128, the tiny tier's evaluation length
    seq = {d.name: d for d in space.derive(base, base, [], floors={"SEQ_LEN": 128})}["SEQ_LEN"]
    assert seq.from_unit(seq.low) == 128 and seq.from_unit(seq.high) == 512
    unfloored = {d.name: d for d in space.derive(base, base, [])}["SEQ_LEN"]
    assert unfloored.from_unit(unfloored.low) == 32


def test_a_knob_the_best_added_is_searched_too() -> None:
    base = knobs.read(BASELINE)
    best = {**base, "DROPOUT": 0.1, "ROPE_BASE": 10000.0}  # a winner's code change brought these
    found = {d.name: d for d in space.derive(base, best, [])}
    assert found["DROPOUT"].kind == "share" and found["ROPE_BASE"].kind == "log"


def test_values_leave_the_space_rounded_to_two_digits() -> None:
    lr, beta = dims()["MATRIX_LR"], dims()["ADAM_BETAS[1]"]
    assert lr.from_unit(math.log(0.04517)) == 0.045
    assert beta.from_unit(beta.to_unit(0.97654)) == 0.977  # two digits of its distance to 1


async def test_offline_ideas_are_readable_and_build_on_the_best() -> None:
    ideas = await OfflineBrain(seed=3).ideas(context(n=4))
    assert len(ideas) == 4 and len({i.title for i in ideas}) == 4
    base = knobs.read(BASELINE)
    for idea in ideas:
        changed = idea.intent["knobs"]
        assert set(idea.intent) == {"knobs"} and changed and idea.parent == "p0"
        moves = [f"{k} {knobs.render(base[k])} -> {knobs.render(v)}" for k, v in sorted(changed.items())]
        assert idea.title == ", ".join(moves)
        assert "What the optimiser saw: 0 ok and 0 failed trials" not in idea.rationale
        assert "1 ok and 0 failed trials" in idea.rationale and "best val_bpb is 1.6000" in idea.rationale
        assert not set(changed) & {"LOG_EVERY", "COMPILE"}


def test_never_proposes_a_configuration_already_tried() -> None:
    """A space of one knob with four values, three of them tried: the fourth is all that is left."""
    code = "WIDTH = 4\nLOG_EVERY = 10\n\ndef train(run):\n    return None\n"
    tried = [Trial(patch=f"p{v}", title="baseline" if v == 4 else f"WIDTH {v}", knobs={"WIDTH": v, "LOG_EVERY": 10},
                   status="ok" if v != 8 else "diverged", val_bpb=1.0 if v != 8 else None, best=v == 4)
             for v in (4, 2, 8)]  # fmt: skip
    ctx = context(tried, n=3, code=code, best="p4")
    proposals = Optimiser(seed=0).propose(ctx, 3)
    values = [p.changes["WIDTH"] for p in proposals]
    assert values and set(values) <= {1, 16}  # WIDTH is a shape and a power of two: 1 .. 16 around 4
    assert len(values) == len(set(values)) == 2  # 1 and 16, once each, then nothing: all else was tried


def softcap_trials(failures: bool) -> list[Trial]:
    """A one-knob arena: SOFTCAP tried at 11..19 (all a little worse than 15), and, when
    `failures`, at 22..28 and 9..10 too, where every run diverged."""
    def trial(name: str, value: float, status: str = "ok", val: float | None = 1.502) -> Trial:
        return Trial(patch=name, title=f"SOFTCAP {value}", knobs={"SOFTCAP": value, "LOG_EVERY": 10}, status=status,
                     val_bpb=val, best=name == "b")  # fmt: skip

    trials = [trial("b", 15.0, val=1.5)] + [trial(f"ok{v}", v) for v in (11.0, 12.0, 13.0, 14.0, 17.0, 19.0)]
    if failures:
        trials += [trial(f"bad{v}", v, "diverged", None) for v in (22.0, 24.0, 26.0, 28.0, 9.0, 10.0)]
    return trials


def test_failures_count_against_their_region() -> None:
    code = "SOFTCAP = 15.0\nLOG_EVERY = 10\n\ndef train(run):\n    return None\n"

    def share_in_21_to_29(failures: bool) -> float:
        ctx = context(softcap_trials(failures), code=code, best="b")
        proposed = [p.changes["SOFTCAP"] for seed in range(40) for p in Optimiser(seed).propose(ctx, 1)]
        assert len(proposed) == 40
        return sum(21.0 <= v <= 29.0 for v in proposed) / len(proposed)

    assert share_in_21_to_29(failures=False) > 0.25  # unexplored: TPE goes there often
    assert share_in_21_to_29(failures=True) < 0.1  # where runs diverged: it stays away


async def test_the_offline_brain_finds_better_knobs_on_the_sim_tier() -> None:
    """30 rounds against harness.sim's known function, promoting as the board does: a candidate
    that beats the best on its first seed is re-run on more seeds, and becomes the best when its
    mean beats the best's by MIN_DELTA. The best found must be clearly better than the baseline
    in the sim's noise-free value (its noise is 0.004 per run; the baseline is 0.097 above the
    sim's floor)."""
    brain, baseline = OfflineBrain(seed=0), read_knobs(BASELINE)
    first = sim.simulate(BASELINE, 0, BASELINE)["val_bpb"]
    trials = [baseline_trial(first).model_copy(update={"n": 1})]
    codes, best, configs, started = {"p0": BASELINE}, "p0", [space.key(knobs.read(BASELINE))], time.perf_counter()
    for i in range(1, ROUNDS + 1):
        best_trial = next(t for t in trials if t.patch == best)
        (idea,) = await brain.ideas(context(trials, code=codes[best], best=best))
        assert idea.parent == best
        code = (await brain.implement(ImplementTask(program="", contract="", title=idea.title, rationale=idea.rationale,
                                                    intent=idea.intent, parent_code=codes[best]))).code  # fmt: skip
        configs.append(space.key(knobs.read(code)))
        result = sim.simulate(code, i, BASELINE)
        values = [result["val_bpb"]] if result["status"] == "ok" else []
        if values and values[0] < best_trial.val_bpb:  # a candidate: replicate it
            values += [sim.simulate(code, 1000 * i + s, BASELINE)["val_bpb"] for s in range(1, SEEDS)]
        mean = sum(values) / len(values) if values else None
        patch = f"p{i}"
        codes[patch] = code
        if mean is not None and mean < best_trial.val_bpb - MIN_DELTA:
            best = patch
        trials = [t.model_copy(update={"best": t.patch == best}) for t in trials]
        trials.append(Trial(patch=patch, title=idea.title, knobs=knobs.read(code), status=result["status"],
                            val_bpb=mean, n=len(values), reason=result.get("reason") or None,
                            best=patch == best))  # fmt: skip
    per_round = (time.perf_counter() - started) / ROUNDS
    gain = sim.loss(baseline, baseline) - sim.loss(read_knobs(codes[best]), baseline)
    assert len(set(configs)) == len(configs), "a configuration was proposed twice"
    assert best != "p0" and gain > 0.02, f"best {best} gains only {gain:.4f} on the baseline"
    print(f"sim: best {best} gains {gain:.4f}, {per_round * 1000:.0f} ms per round")
