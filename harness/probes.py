"""Causality probes hidden among the scored rows, so a program cannot tell a check from a score.

A probe is a copy of a scored window whose tokens after a random cut c are replaced by a real
continuation from elsewhere in the validation split: a place where the same two tokens as the
window's tokens c-1 and c occur, so every bigram of the probe is real text and the splice does not
show. A causal program gives the probe the same log-probabilities for the targets at positions
0..c as the scored window; one that reads later tokens (or other rows of its batch) does not.

Probes and scored windows are dealt together, in a secret random order (os.urandom through
random.SystemRandom, never the run's seed), into calls of the evaluation's batch size; a call never
holds a window and its own probe (they share a prefix). The program has no state (see
harness.archive), so it sees only a stream of real-looking rows and cannot count its way to the probes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Probe:
    window: int  # the scored window it copies
    cut: int  # positions 0..cut are the window's; positions after it come from elsewhere
    tokens: torch.Tensor  # the probe's input, shape (length,)


def make_probes(val: torch.Tensor, inputs: torch.Tensor, starts: torch.Tensor, count: int, vocab: int,
                rng: random.Random) -> list[Probe]:  # fmt: skip
    """`count` probes of randomly chosen windows (each window once before any twice), cut at random."""
    windows, length = inputs.shape
    index = _Continuations(val, vocab)
    order: list[int] = []
    while len(order) < count:
        order += rng.sample(range(windows), windows)
    probes = []
    for window in order[:count]:
        cut = rng.randrange(length - 1)  # at least one token after the cut is replaced
        start = int(starts[window])
        place = index.find(val, start + cut, length - 1 - cut, rng)
        tokens = inputs[window].clone()
        tokens[cut + 1 :] = val[place + 1 : place + length - cut]
        probes.append(Probe(window, cut, tokens))
    return probes


def deal(windows: int, probes: list[Probe], batch: int, rng: random.Random) -> list[list[int]]:
    """Calls of `batch` row ids (0..windows-1 scored, windows+i probe i) in a secret random order.

    No call holds a window and one of its probes (or two probes of one window).
    """
    rows = list(range(windows + len(probes)))
    if len(rows) % batch or windows < batch:
        raise ValueError(f"{windows} windows and {len(probes)} probes cannot fill calls of {batch} rows of distinct windows")
    family = [r if r < windows else probes[r - windows].window for r in rows]
    rng.shuffle(rows)
    calls = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    for _ in range(100 * len(rows)):
        clash = _clash(calls, family)
        if clash is None:
            return calls
        here, slot = clash
        there = rng.randrange(len(calls))
        other = rng.randrange(batch)
        calls[here][slot], calls[there][other] = calls[there][other], calls[here][slot]
    raise ValueError("could not deal the rows into calls without two rows of one window in a call")


def worst_difference(logprobs: torch.Tensor, scored: torch.Tensor, windows: int, probes: list[Probe]) -> tuple[float, str]:
    """The largest change of a scored target's log-probability between a window and its probes, and where.

    `logprobs` (rows, length): per row, the log-probability of the window's own targets; `scored`
    (windows, length): which targets count (document tokens do not). NaN counts as a change.
    """
    worst, where = 0.0, ""
    for i, probe in enumerate(probes):
        keep = scored[probe.window, : probe.cut + 1]
        diff = (logprobs[windows + i, : probe.cut + 1] - logprobs[probe.window, : probe.cut + 1]).abs()[keep]
        if diff.numel() == 0:
            continue
        top = float(diff.nan_to_num(nan=float("inf")).max())
        if top > worst:
            worst, where = top, f"window {probe.window}, tokens after position {probe.cut} replaced"
    return worst, where


def _clash(calls: list[list[int]], family: list[int]) -> tuple[int, int] | None:
    for c, call in enumerate(calls):
        seen: set[int] = set()
        for slot, row in enumerate(call):
            if family[row] in seen:
                return c, slot
            seen.add(family[row])
    return None


class _Continuations:
    """Where in the split a given bigram (or, failing that, token) occurs: sorted keys and positions."""

    def __init__(self, val: torch.Tensor, vocab: int) -> None:
        self.vocab = vocab
        pairs = val[:-1] * vocab + val[1:]  # the pair ending at position q + 1
        self.pair_keys, pair_order = torch.sort(pairs)
        self.pair_at = pair_order + 1
        self.token_keys, self.token_at = torch.sort(val)

    def find(self, val: torch.Tensor, at: int, span: int, rng: random.Random) -> int:
        """A position q holding the token at `at` (and, if it can, the one before), followed by `span`
        tokens of which the first differs from the token after `at`."""
        limit = val.numel() - 1 - span
        nxt = int(val[at + 1])
        options = []
        if at > 0:
            options.append((self.pair_keys, self.pair_at, int(val[at - 1]) * self.vocab + int(val[at])))
        options.append((self.token_keys, self.token_at, int(val[at])))
        for keys, positions, key in options:
            lo = int(torch.searchsorted(keys, key))
            hi = int(torch.searchsorted(keys, key, right=True))
            found = positions[lo:hi]
            found = found[(found <= limit)]
            found = found[val[found + 1] != nxt]
            if found.numel():
                return int(found[rng.randrange(found.numel())])
        place = rng.randrange(limit + 1)  # no real continuation of this token: any other text
        for _ in range(1000):
            if int(val[place + 1]) != nxt:
                break
            place = rng.randrange(limit + 1)
        return place
