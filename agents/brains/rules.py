"""The reviewer's static rules: what can be judged from the code and the numbers, without a model.

The offline brain's review is these rules alone; an LLM reviewer gets their findings in its prompt.
- Static problems found before the review (the guard, the scope of the diff) reject the patch.
- Metric gaming rejects it: lines the patch adds that read files or the environment, name the
  evaluation or the validation data, or set seeds or random state (the harness seeds every run;
  choosing seeds is choosing results).
- Complexity must pay: a patch that changes more than knob literals must beat the arena's best by
  more than the noise (NOISE_Z x the measured seed spread, and at least MIN_GAIN); one that only
  turns knobs costs nothing to keep and is left to the promotion rule.
"""

from __future__ import annotations

import ast
import re
import statistics

from agents import knobs
from agents.brains.base import ReviewTask, ReviewVerdict
from harness import syntax

MIN_GAIN = 0.002  # the smallest val_bpb gain that counts, whatever the noise (the board's default)
NOISE_Z = 2.0  # a gain must exceed this many seed spreads
FILE_WORDS = {"open", "Path", "pathlib", "os", "io", "sys", "read_text", "read_bytes", "write_text", "glob",
              "listdir", "pickle", "shutil", "environ", "getenv", "load", "save", "urlopen", "socket", "subprocess"}
EVAL_WORDS = {"val", "valid", "validation", "bpb", "evaluate", "evaluation", "evaluator", "score", "metric",
              "metrics", "test_split", "val_bpb"}  # fmt: skip
SEED_WORDS = {"seed", "manual_seed", "manual_seed_all", "set_rng_state", "get_rng_state", "initial_seed",
              "random", "use_deterministic_algorithms"}  # fmt: skip


def hard_findings(task: ReviewTask) -> list[str]:
    """What no brain may overrule: the guard's findings and lines that read like metric gaming."""
    return [f"static check: {p}" for p in task.problems] + [
        f"looks like metric gaming: {line}" for line in gaming_lines(task.parent_code, task.code)]


def review(task: ReviewTask) -> ReviewVerdict:
    """Approve or reject by the static rules, with every reason stated either way."""
    reasons = hard_findings(task)
    knob_changes = knobs.changes(task.parent_code, task.code)
    gain, noise = gain_and_noise(task)
    if knob_changes is None:
        if gain is not None and gain <= noise:
            reasons.append(f"changes more than knob values for a gain of {gain:+.4f} val_bpb, within the noise "
                           f"({noise:.4f}): not worth the added complexity")  # fmt: skip
    if reasons:
        return ReviewVerdict(verdict="reject", reasons=reasons)
    return ReviewVerdict(verdict="approve", reasons=_approval(knob_changes, gain, noise))


def gaming_lines(parent: str, code: str) -> list[str]:
    """Lines that `code` adds to `parent` and that read files, touch evaluation or set seeds."""
    try:
        tree = syntax.parse(code)
    except SyntaxError:
        return []  # the guard reports the syntax error; nothing here can be judged
    old = {line.strip() for line in parent.splitlines()}
    lines = code.splitlines()
    found: dict[int, str] = {}
    for node in ast.walk(tree):
        words = _words(node)
        if not words:
            continue
        line = lines[node.lineno - 1].strip() if 0 < getattr(node, "lineno", 0) <= len(lines) else ""
        if not line or line in old or line.startswith("#"):
            continue
        what = _what(words)
        if what and node.lineno not in found:
            found[node.lineno] = f"line {node.lineno} {what}: {line[:120]}"
    return [found[n] for n in sorted(found)]


def gain_and_noise(task: ReviewTask) -> tuple[float | None, float]:
    """The candidate's mean gain over the best (positive is better), and the noise it must beat."""
    if not task.values or not task.best_values:
        return None, MIN_GAIN
    gain = statistics.fmean(task.best_values) - statistics.fmean(task.values)
    spread = task.spread
    if spread is None:
        pooled = [statistics.stdev(v) for v in (task.values, task.best_values) if len(v) > 1]
        spread = max(pooled, default=0.0)
    return gain, max(MIN_GAIN, NOISE_Z * spread)


def _words(node: ast.AST) -> set[str]:
    """The whole identifiers a node names (and, for a string, the evaluation words in it)."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Attribute):
        return {node.attr}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        return {part for n in names for part in n.split(".")}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {w for w in re.findall(r"[A-Za-z_]+", node.value) if w.lower() in EVAL_WORDS}
    return set()


def _what(words: set[str]) -> str:
    # Whole names only for files and seeds (`load_state_dict` is not `load`); evaluation words also
    # inside names (`val_loader`, `compute_bpb`).
    parts = {part for word in words for part in word.lower().split("_")}
    if words & FILE_WORDS:
        return "reads or writes outside the model (files, environment, processes)"
    if parts & EVAL_WORDS:
        return "touches the evaluation or the validation data"
    if words & SEED_WORDS:
        return "sets seeds or random state (the harness seeds every run)"
    return ""


def _approval(knob_changes: dict | None, gain: float | None, noise: float) -> list[str]:
    reasons = ["no static problems, and no lines that read files, touch evaluation or set seeds"]
    if knob_changes is not None:
        changed = ", ".join(f"{k} = {knobs.render(v)}" for k, v in knob_changes.items()) or "nothing"
        reasons.append(f"changes only knob values ({changed}): nothing else to keep or maintain")
    elif gain is not None:
        reasons.append(f"changes code beyond knob values and gains {gain:+.4f} val_bpb, beyond the noise ({noise:.4f})")
    else:
        reasons.append("changes code beyond knob values; no result yet, so its gain is left to the promotion rule")
    return reasons
