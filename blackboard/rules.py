"""The board's rules as pure functions: code and idea normalisation, dedup keys, the promotion rule.

No I/O here: the service calls these to decide, the projection to index, tests to pin them down.

- Code: two patches are the same when their normalised code matches: the AST with comments,
  docstrings and layout stripped, printed back by `ast.unparse`. `code_hash` is its sha256.
  The printed form depends on the Python version's `ast.unparse`, so nodes of one swarm should run
  the same Python minor version (or let the service recompute hashes from the code it receives).
- Ideas: two hypotheses are duplicates when their `idea_key`s match: same arena and parent, the same
  title once case, punctuation, spacing and the spelling of numbers are normalised, and the same
  intent once canonicalised (so `{"LR": 0.020}` and `{"lr": 2e-2}` agree).
- Promotion: a candidate becomes the arena's best when it has `seeds` ok runs, its mean val_bpb is
  lower than the best's by more than max(min_delta, z x seed spread), and a reviewer approved it.
- Futility: a candidate whose seeds so far leave its other seeds a score they would reach by chance
  less than about once in a thousand is decided before they run (`futility`), as a sequential trial
  stops for futility: the runs go to ideas that can still win.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
import statistics
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blackboard.events import Outcome, Review
from harness import syntax
from swarm.ground.errors import BoardError


# A token of text: a number (kept whole, with its decimal point and exponent) or a run of letters.
# Everything else (punctuation, symbols, underscores, spaces) only separates tokens.
_TOKEN = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?|[^\W\d_]+")


class CodeError(BoardError):
    """Source code that does not parse as Python, so it cannot be normalised."""


# --- code ---------------------------------------------------------------------------------------


def normalize_code(source: str) -> str:
    """The code with comments, docstrings and layout stripped: what it does, not how it is written."""
    try:
        tree = syntax.parse(source)
        _strip_strings(tree)
        return ast.unparse(tree)
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes in the source
        raise CodeError(f"code does not parse: {exc}") from exc
    except RecursionError as exc:  # absurdly deep expressions: not a train.py anyone runs
        raise CodeError("code nests too deeply to normalise") from exc


def code_hash(source: str) -> str:
    """sha256 hex of the normalised code: equal for sources that differ only in form."""
    return hashlib.sha256(normalize_code(source).encode()).hexdigest()


def patch_hash(source: str) -> str:
    """What the board records as a patch's hash: its `code_hash`, or "" for code that does not parse
    (the service refuses such a patch, saying why). Computed from the code, never taken from the sender."""
    try:
        return code_hash(source)
    except CodeError:
        return ""


def _strip_strings(tree: ast.AST) -> None:
    """Drop statements that are a bare string: docstrings and string 'comments' do nothing."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            kept = [s for s in body if not _is_bare_string(s)]
            # A body cannot be empty; `pass` is what a docstring-only body does.
            setattr(node, field, kept or ([ast.Pass()] if field == "body" else []))


def _is_bare_string(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


# --- ideas --------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """NFKC, casefolded, numbers spelled canonically, punctuation and whitespace collapsed to one space."""
    tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())
    return " ".join(_number(t) if t[0].isdigit() else t for t in tokens)


def idea_key(arena: str, parent: str | None, title: str, intent: Mapping[str, Any]) -> str:
    """The dedup key of a hypothesis: sha256 hex over its arena, parent, normalised title and intent.

    A parent of None (the arena's baseline) keys differently from the baseline's patch id: callers
    that want the two to match pass the baseline's id for None.
    """
    parts = [arena, parent or "", normalize_text(title), _canonical(dict(intent))]
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


def _number(token: str) -> str:
    """One spelling per value: 0.020, 0.02 and 2e-2 are all '0.02'; 3 and 3.0 are '3.0'."""
    return repr(float(token))


def _canonical(value: Any) -> Any:
    """Intent as plain JSON with one spelling per meaning: keys sorted, text and numbers normalised."""
    if isinstance(value, Mapping):
        items = ((normalize_text(str(k)), _canonical(v)) for k, v in value.items())
        return {k: v for k, v in sorted(items, key=lambda kv: kv[0])}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return _number(str(value))  # via text: an int too large for a float becomes inf, not an error
    if isinstance(value, bytes):
        return value.hex()
    return normalize_text(str(value))


# --- noise and promotion ------------------------------------------------------------------------


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean, NaN for no values; summed exactly (`fsum`) when every value is finite."""
    if not values:
        return math.nan
    if all(math.isfinite(v) for v in values):
        return math.fsum(values) / len(values)
    return sum(values) / len(values)  # inf or NaN among them: IEEE says which (fsum raises on inf - inf)


def std(values: Sequence[float]) -> float:
    """The sample standard deviation: 0.0 for fewer than two values, NaN when one is not finite."""
    if len(values) < 2:
        return 0.0
    if not all(math.isfinite(v) for v in values):
        return math.nan  # statistics.stdev cannot take them
    return statistics.stdev(values)


def seed_spread(groups: Sequence[Sequence[float]]) -> float | None:
    """Pooled within-group standard deviation: the noise of val_bpb between seeds of the same code.

    Each group is the val_bpb of the ok runs of one code with different seeds; groups of fewer than
    two finite values say nothing about noise and are skipped. None when no group has two.
    """
    squares, dof = 0.0, 0
    for group in groups:
        values = [v for v in group if math.isfinite(v)]  # a NaN is not a measurement
        if len(values) >= 2:
            centre = mean(values)
            squares += math.fsum((v - centre) ** 2 for v in values)
            dof += len(values) - 1
    return math.sqrt(squares / dof) if dof else None


def foreign_result(fingerprint: str, arena_fingerprint: str | None) -> str | None:
    """Why a run's result cannot be compared in its arena (a harness with another fingerprint made
    it: another tier, other data, an edited fixed module), or None when it can (or the arena is unknown)."""
    if arena_fingerprint is None or fingerprint == arena_fingerprint:
        return None
    return (f"refused: its harness fingerprint {fingerprint[:12]} is not its arena's {arena_fingerprint[:12]}, "
            "so its numbers are not comparable there")


def is_candidate(val_bpb: float, best_mean: float, min_delta: float) -> bool:
    """Whether one explore result beats the best's mean by at least min_delta: worth replicating."""
    return best_mean - val_bpb >= min_delta  # False for NaN


def futility(candidate: Sequence[float], best: Sequence[float], spread: float | None, *, seeds: int,
             min_delta: float, z: float, futility_z: float) -> str | None:
    """Why a candidate part-way through its seeds cannot be promoted, or None while it can.

    The promotion needs the mean over all `seeds` below the best's mean by more than the threshold,
    so its r remaining seeds must average at most `need`. Their mean, predicted from the k seen
    (mean m) with seed spread s, varies by s x sqrt(1/r + 1/k) (the new seeds' noise and the
    uncertainty of m). The candidate is hopeless when `need` lies more than `futility_z` of those
    below m: about a 1-in-1,000 chance at 3. Nothing is stopped without a measured spread, before
    the first seed, or with `futility_z` 0.
    """
    runs = [v for v in candidate if math.isfinite(v)]
    base = [v for v in best if math.isfinite(v)]
    k, r = len(runs), seeds - len(runs)
    if futility_z <= 0 or spread is None or spread <= 0 or not base or k == 0 or r <= 0:
        return None
    bar = mean(base) - max(min_delta, z * spread)  # a promoted mean must be below this
    need = (seeds * bar - math.fsum(runs)) / r
    scale = spread * math.sqrt(1 / r + 1 / k)
    short = (mean(runs) - need) / scale
    if short <= futility_z:
        return None
    return (f"stopped after {k} of {seeds} seeds: mean {mean(runs):.4f}; a promotion (mean below {bar:.4f}) needs "
            f"its other {r} to average {need:.4f}, {short:.1f} predicted spreads ({scale:.4f}) better than its "
            f"mean so far (futility_z {futility_z:g})")


@dataclass(frozen=True)
class Verdict:
    """The promotion rule's answer, with the numbers behind it and a sentence a person reads."""

    promote: bool
    outcome: Outcome
    threshold: float  # the gain the candidate had to exceed: max(min_delta, z x spread)
    spread: float | None  # the seed spread used, None when nothing measured it
    n: int  # ok runs of the candidate
    mean: float  # NaN when the candidate has no ok run
    std: float  # sample standard deviation; 0.0 with fewer than two runs
    best_mean: float | None  # None when the arena has no best yet
    explanation: str


def promotion_verdict(
    candidate: Sequence[float],
    best: Sequence[float],
    spread: float | None,
    *,
    seeds: int,
    min_delta: float,
    z: float,
    review: Review | None,
) -> Verdict:
    """Whether `candidate` (val_bpb of its ok runs) replaces `best` (the current best's ok runs).

    Checked in this order, the first that fails decides the outcome: not rejected by a reviewer
    (rejected_in_review: its replications are cancelled, so this comes first), at least `seeds` ok
    runs (failed), a gain of mean over the best's mean greater than the threshold (not_better),
    a reviewer's approval (awaiting_review).

    `spread` is the arena's measured seed spread. When none was measured yet, the spread of these
    two codes' own seeds is used: both sets are repeats of one code with different seeds, which is
    exactly what the spread measures. With single runs on both sides, min_delta alone is the
    threshold. An arena with no best (its baseline's first promotion) has nothing to beat and no
    reviewer: enough seeds promote it.
    """
    runs = [v for v in candidate if math.isfinite(v)]
    base = [v for v in best if math.isfinite(v)]
    n = len(runs)
    average, spread_of_runs = mean(runs), std(runs)
    best_mean = mean(base) if base else None
    own = spread is None
    used = seed_spread([runs, base]) if own else spread
    noise = z * used if used is not None else 0.0
    threshold = max(min_delta, noise)
    times = f"{z:.1f}" if round(z, 1) == z else f"{z:g}"

    def verdict(outcome: Outcome, explanation: str) -> Verdict:
        return Verdict(outcome == "promoted", outcome, threshold, used, n, average, spread_of_runs, best_mean, explanation)

    summary = f"mean {average:.4f} over {n} seed{'s' * (n != 1)}"
    if review == "reject":
        return verdict("rejected_in_review", f"a reviewer rejected the patch ({n} of {seeds} seeds run)")
    if n < seeds:
        return verdict("failed", f"{n} ok run{'s' * (n != 1)} of the {seeds} seeds a promotion needs")
    if best_mean is None:
        return verdict("promoted", f"{summary} is the arena's first best")
    gain = best_mean - average
    if used is None:
        why = f"threshold {threshold:.4f} = min_delta (no seed spread measured yet)"
    elif noise >= min_delta:
        source = "these runs' spread" if own else "spread"
        why = f"threshold {threshold:.4f} = {times} x {source} {used:.4f}"
    else:
        why = f"threshold {threshold:.4f} = min_delta (above {times} x spread {used:.4f} = {noise:.4f})"
    if gain <= threshold:
        if gain < 0:
            return verdict("not_better", f"{summary} is worse than the best's {best_mean:.4f}; {why}")
        return verdict("not_better", f"{summary} beats the best's {best_mean:.4f} by only {gain:.4f} <= {why}")
    beats = f"{summary} beats the best's {best_mean:.4f} by {gain:.4f} > {why}"
    if review is None:
        return verdict("awaiting_review", f"{beats}; awaiting a reviewer's approval")
    return verdict("promoted", beats)
