"""The token cost of each role's prompt at 50 and 500 trials of history: `python scripts/prompt_cost.py`.

It builds the prompts the LLM brains send (agents.brains.prompts) from a synthetic arena history on
the tiny tier (knob turns, code changes, crashes, review rejections, replications, with the
harness's metrics) and counts tokens as about four characters each, the estimate the desk's budget
uses; a provider's own count differs by some percent. An implementer's pre-flight fix, a repair's
later attempt and a cut-off's retry resend the conversation: each costs about the first request
plus the answers before it.
"""

from __future__ import annotations

import argparse

from agents import knobs
from agents.brains import prompts
from agents.brains.base import IdeaContext, ImplementTask, RepairTask, ReviewTask, ReviewVerdict, Trial
from agents.brains.desk import CHARS_PER_TOKEN, tier_block
from harness import contract, tiers
from roles.common import program, unified_diff

METRICS = {"steps": 120.0, "tokens": 262144.0, "tokens_per_s": 5461.0, "params": 3.2e6, "peak_memory_mb": 812.0,
           "training_seconds": 48.0}  # fmt: skip


def history(count: int, base_code: str) -> list[Trial]:
    base = knobs.read(base_code)
    gelu = unified_diff(base_code, base_code.replace("F.relu(self.up(x)).square()", "F.gelu(self.up(x))"))
    out = [Trial(patch="p0", title="baseline", knobs=base, status="ok", val_bpb=1.60, n=3, std=0.001, best=True,
                 metrics=METRICS)]  # fmt: skip
    for i in range(1, count):
        lr = round(base["MATRIX_LR"] * (0.5 + i / count), 5)
        t = Trial(patch=f"p{i}", title=f"MATRIX_LR {base['MATRIX_LR']} -> {lr}", knobs={**base, "MATRIX_LR": lr},
                  status="ok", val_bpb=1.6 + 0.0003 * (i % 29), n=1, metrics=METRICS,
                  rationale=f"the optimiser sees promise in learning rates near {lr}")  # fmt: skip
        if i % 10 == 3:
            t = t.model_copy(update={"status": "crash", "val_bpb": None, "n": 0, "reason": "RuntimeError: shape '[16, 128, 3, 3, 42]' is invalid"})
        elif i % 10 == 5:
            t = t.model_copy(update={"title": f"GELU MLP variant {i}", "code_change": True, "diff": gelu, "n": 3,
                                     "std": 0.001, "outcome": "not_better", "explanation": "within the noise"})  # fmt: skip
        elif i % 10 == 7:
            t = t.model_copy(update={"rejected": ["It changes more than the hypothesis says."]})
        out.append(t)
    return out


def costs(count: int) -> dict[str, int]:
    tier = tiers.get("tiny")
    code = tier.baseline_path.read_text()
    contract_text = contract.__doc__ or ""
    trials = history(count, code)
    context = IdeaContext(arena="tiny/cpu/0123456789ab", tier="tiny", program=program("ideator"), best_patch="p0",
                          best_code=code, best_mean=1.6, spread=0.001, trials=trials, contract=contract_text,
                          tier_info=tier_block(tier, "tiny/cpu/0123456789ab"), note="Helps: ... " * 40,
                          pending=[f"'idea {i}' (queued)" for i in range(4)], context_len=tier.context_len)  # fmt: skip
    task = ImplementTask(program=program("implementer"), contract=contract_text, title="GELU MLP",
                         rationale="smoother activation", intent={"change": "ReLU^2 -> GELU"}, parent_code=code)  # fmt: skip
    new = code.replace("F.relu(self.up(x)).square()", "F.gelu(self.up(x))")
    repair = RepairTask(**task.model_dump(), code=new, status="crash", reason="exit code 1", log_tail="x" * 3000)
    review = ReviewTask(program=program("reviewer"), contract=contract_text, title="GELU MLP", rationale="smoother",
                        parent_code=code, code=new, diff=unified_diff(code, new), values=[1.59, 1.592], best_values=[1.6] * 3,
                        spread=0.001, metrics=METRICS, parent_metrics=METRICS,
                        similar=[f"p{i} 'GELU MLP variant {i}' (90% alike): val_bpb 1.6010 over n=3, not_better" for i in (5, 15, 25)])  # fmt: skip
    static = ReviewVerdict(verdict="approve", reasons=["a code change with a gain beyond the noise"])
    built = {"ideator: ideas": prompts.ideas(context), "ideator: note": prompts.note(context),
             "implementer: implement": prompts.implement(task), "implementer: repair": prompts.repair(repair),
             "reviewer: review": prompts.review(review, static)}  # fmt: skip
    return {name: -(-(len(p.system) + len(p.user)) // CHARS_PER_TOKEN) for name, p in built.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[50, 500], help="history sizes (default: 50 500)")
    sizes = parser.parse_args().trials
    table = {n: costs(n) for n in sizes}
    print(f"{'prompt (tokens, ~4 chars each)':32}" + "".join(f"{f'{n} trials':>14}" for n in sizes))
    for name in table[sizes[0]]:
        print(f"{name:32}" + "".join(f"{table[n][name]:>14,}" for n in sizes))


if __name__ == "__main__":
    main()
