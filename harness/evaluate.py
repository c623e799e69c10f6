"""The evaluation process: the score, computed where no agent code has run. FIXED, do not modify.

=====================================================================================================
Started by the runner as `python -I -S` (no current directory, PYTHONPATH, user site or .pth files
on sys.path, only the harness and site-packages added explicitly) with a cwd outside the run
directory, after every process of the training run has been killed, in the OS sandbox (harness.jail:
it reads the model file, the tokenizer and the one held-out split it scores, writes nothing, reaches
no network). The spec names the split: "val" (every run's score, what the search sees) or "audit"
(a promoted best's score on documents no search ever uses; same rules, only the file differs). It reads its instructions as JSON on stdin, loads the exported program (a graph of torch
operators and its weights: no Python of train.py is imported), and writes one JSON object to a
pipe that only it holds (see main).

1. The model file is checked before torch reads it and loaded from a clean copy (harness.archive):
   plain tensors and aten operators only; a program that keeps state between calls is rejected.
2. Causality. Logits at position t may depend only on tokens 0..t of the same sequence. Every
   scored window gets a probe (harness.probes): a copy whose tokens after a random cut come from
   elsewhere in the split, dealt with the scored rows into calls in a secret random order. The
   log-probabilities of the scored targets up to the cut must equal the window's (PROBE_ATOL nats,
   absolute). Else: rejected.
3. val_bpb = sum of the cross-entropy (nats) over the scored target tokens
             / (ln 2 x the raw UTF-8 bytes of those target tokens).
   The tier fixes the scored tokens: eval_tokens // context_len windows of context_len + 1 tokens,
   spread evenly over the scored split. Document tokens (zero bytes) are not scored.
   A non-finite loss is reported as diverged.
4. params: the number of parameter elements in the program's weights.
The model file was written by the training process, so loading it may not unpickle any Python
object that names code (see refuse_unpickling_code).
=====================================================================================================
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

from harness import archive, probes

PROBE_ATOL = 1e-4  # nats, absolute: a causal program gives a probe's prefix the same log-probabilities
                   # bit for bit on CPU (measured: 0.0); float reordering elsewhere stays far below this


def main(spec: dict[str, Any]) -> None:
    """Run in the sandbox, by harness.procs.boot; the result goes to the pipe `spec["result_fd"]`.

    Not to stdout: stdout is the log, and a pipe inherited by this process alone is a channel that
    no other process can hold open, so nobody else can write the line the runner reads.
    """
    refuse_unpickling_code()
    started = time.perf_counter()
    try:
        result = evaluate(spec)
    except Exception as exc:  # a bad program (wrong shapes, unknown ops) is the run's outcome
        result = {"status": "crash", "reason": f"evaluation failed: {type(exc).__name__}: {exc}"[:800]}
    result["eval_seconds"] = time.perf_counter() - started
    with os.fdopen(spec["result_fd"], "w") as channel:
        channel.write(json.dumps(result))


def refuse_unpickling_code() -> None:
    """No pickle in this process may name a Python callable (cannot be undone: an audit hook).

    The model file was written where agent code ran. torch.export.load falls back to
    torch.load(weights_only=False) and pickle.loads for some payloads, and a crafted pickle runs
    any code it names. An honest program loads with no pickle lookups at all (measured), so every
    `pickle.find_class` is refused.
    """

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "pickle.find_class":
            raise pickle.UnpicklingError(f"swarm: the model file names {args[0]}.{args[1]}; refused")

    sys.addaudithook(hook)


def evaluate(spec: dict[str, Any]) -> dict[str, Any]:
    secret = random.SystemRandom()  # os.urandom: nothing the program or the run's seed can predict
    torch.manual_seed(secret.getrandbits(63))  # a program that draws random numbers cannot count its calls
    device = spec["device"]
    batch, length, vocab = spec["eval_batch"], spec["context_len"], spec["vocab_size"]
    with open(spec["tokenizer"]) as handle:
        token_bytes = torch.tensor(json.load(handle)["token_bytes"], dtype=torch.float64)
    with open(spec["data"], "rb") as handle:
        val = torch.frombuffer(bytearray(handle.read()), dtype=torch.uint16).long()
    windows = spec["eval_tokens"] // length
    starts = window_starts(val.numel(), windows, length + 1, spec["split"])
    try:
        program = archive.load_program(spec["model"], batch, length)
    except archive.ArchiveRefused as exc:
        return {"status": "rejected", "reason": str(exc)}
    params = count_params(program)
    model = program.module()

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        out = model(x.to(device))
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch, length, vocab):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the model returned {shape}, expected logits of shape {(batch, length, vocab)}")
        return out.float().cpu()

    rows = val[starts[:, None] + torch.arange(length + 1)]
    count = -(-2 * windows // batch) * batch - windows  # a probe per window at least, filling the last call
    found = probes.make_probes(val, rows[:, :-1], starts, count, vocab, secret)
    with torch.no_grad():
        logprobs = log_probabilities(logits_of, rows, found, probes.deal(windows, found, batch, secret))
    weights = token_bytes[rows[:, 1:]]
    nll, nbytes = 0.0, 0.0
    for i in range(0, windows, batch):  # summed batch by batch in window order, as always: same bits
        nll += (-logprobs[i : i + batch]).reshape(-1)[weights[i : i + batch].reshape(-1) > 0].sum().item()
        nbytes += weights[i : i + batch].sum().item()
    bpb = nll / (math.log(2) * nbytes)
    if not math.isfinite(bpb):
        return {"status": "diverged", "reason": f"validation loss is {bpb}", "params": params}
    worst, where = probes.worst_difference(logprobs, weights > 0, windows, found)
    if not worst <= PROBE_ATOL:
        return {"status": "rejected", "params": params,
                "reason": f"model is not causal: the log-probability of a scored token changed by {worst:.3g} nats "
                          f"({where}) when only later tokens, or the other rows of its batch, changed"}  # fmt: skip
    return {"status": "ok", "reason": "", "val_bpb": bpb, "params": params, "eval_tokens": windows * length}


def log_probabilities(logits_of: Any, rows: torch.Tensor, found: list[probes.Probe], calls: list[list[int]]) -> torch.Tensor:
    """(windows + probes, length) float64: each row's log-probability of its window's targets."""
    length = rows.shape[1] - 1
    inputs = torch.cat([rows[:, :-1], torch.stack([p.tokens for p in found])]) if found else rows[:, :-1]
    targets = torch.cat([rows[:, 1:], rows[[p.window for p in found], 1:]])
    out = torch.empty(len(inputs), length, dtype=torch.float64)
    for call in calls:
        ids = torch.tensor(call)
        logits = logits_of(inputs[ids])
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[ids].reshape(-1), reduction="none")
        out[ids] = -losses.double().view(len(call), length)
    return out


def window_starts(total: int, windows: int, span: int, split: str = "val") -> torch.Tensor:
    """Starts of `windows` non-overlapping windows of `span` tokens, spread evenly over `total`."""
    if windows * span > total:
        raise ValueError(f"the {split} split has {total} tokens, too few for {windows} windows of {span}")
    if windows == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.tensor([i * (total - span) // (windows - 1) for i in range(windows)], dtype=torch.long)


def count_params(program: torch.export.ExportedProgram) -> int:
    names = set(program.graph_signature.parameters)
    return sum(t.numel() for name, t in program.state_dict.items() if name in names)


if __name__ == "__main__":
    from harness.procs import boot

    boot(__name__)
