"""The evaluation process: the score, computed where no agent code has run. FIXED, do not modify.

=====================================================================================================
Started by the runner as `python -I -S` (no current directory, PYTHONPATH, user site or .pth files
on sys.path, only the harness and site-packages added explicitly) with a cwd outside the run
directory, after every process of the training run has been killed, in the OS sandbox (harness.jail:
it reads the model file, the tokenizer and the held-out split, writes nothing, reaches no
network). It reads its instructions as JSON on stdin, loads the exported program (a graph of torch
operators and its weights: no Python of train.py is imported), and writes one JSON object to a
pipe that only it holds (see main).

1. Causality. Logits at position t may depend only on tokens 0..t of the same sequence. Checked on
   real validation windows: the tokens after a cut are replaced (at three cuts), then every row but
   the first; earlier logits, and the first row's, must not change. Else: rejected.
2. val_bpb = sum of the cross-entropy (nats) over the scored target tokens
             / (ln 2 x the raw UTF-8 bytes of those target tokens).
   The tier fixes the scored tokens: eval_tokens // context_len windows of context_len + 1 tokens,
   spread evenly over the validation split. Document tokens (zero bytes) are not scored.
   A non-finite loss is reported as diverged.
3. params: the number of parameter elements in the program's weights.
The model file was written by the training process, so loading it may not unpickle any Python
object that names code (see refuse_unpickling_code).
=====================================================================================================
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

CAUSAL_ATOL = 1e-4  # relative to the logits' scale: a causal model's earlier logits are identical
                    # up to float reordering; a leak of later tokens changes them far more


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
    torch.manual_seed(0)
    device = spec["device"]
    batch, length, vocab = spec["eval_batch"], spec["context_len"], spec["vocab_size"]
    with open(spec["tokenizer"]) as handle:
        token_bytes = torch.tensor(json.load(handle)["token_bytes"], dtype=torch.float64)
    with open(spec["val"], "rb") as handle:
        val = torch.frombuffer(bytearray(handle.read()), dtype=torch.uint16).long()
    windows = spec["eval_tokens"] // length
    starts = window_starts(val.numel(), windows, length + 1)

    program = torch.export.load(spec["model"])
    params = count_params(program)
    model = program.module()

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        out = model(x.to(device))
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch, length, vocab):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the model returned {shape}, expected logits of shape {(batch, length, vocab)}")
        return out.float().cpu()

    first = val[starts[:batch, None] + torch.arange(length)]
    other = val[starts[batch : 2 * batch, None] + torch.arange(length)] if len(starts) >= 2 * batch else first.flip(0)
    with torch.no_grad():
        problem = causality_problem(logits_of, first, other)
        if problem:
            return {"status": "rejected", "reason": f"model is not causal: {problem}", "params": params}
        nll, nbytes = 0.0, 0.0
        for i in range(0, len(starts), batch):
            rows = val[starts[i : i + batch, None] + torch.arange(length + 1)]
            x, y = rows[:, :-1], rows[:, 1:]
            losses = F.cross_entropy(logits_of(x).reshape(-1, vocab), y.reshape(-1), reduction="none").double()
            weights = token_bytes[y.reshape(-1)]
            scored = weights > 0
            nll += losses[scored].sum().item()
            nbytes += weights.sum().item()
    bpb = nll / (math.log(2) * nbytes)
    if not math.isfinite(bpb):
        return {"status": "diverged", "reason": f"validation loss is {bpb}", "params": params}
    return {"status": "ok", "reason": "", "val_bpb": bpb, "params": params, "eval_tokens": len(starts) * length}


def window_starts(total: int, windows: int, span: int) -> torch.Tensor:
    """Starts of `windows` non-overlapping windows of `span` tokens, spread evenly over `total`."""
    if windows * span > total:
        raise ValueError(f"the validation split has {total} tokens, too few for {windows} windows of {span}")
    if windows == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.tensor([i * (total - span) // (windows - 1) for i in range(windows)], dtype=torch.long)


def causality_problem(logits_of: Any, x: torch.Tensor, other: torch.Tensor) -> str:
    """'' if the model is causal and keeps batch rows apart on these inputs, else what leaked."""
    base = logits_of(x)
    scale = CAUSAL_ATOL * (1.0 + base.abs().max().item())
    length = x.shape[1]
    for cut in sorted({1, length // 2, length - 1}):
        changed = x.clone()
        changed[:, cut:] = other[:, cut:]
        if not torch.equal(changed[:, cut:], x[:, cut:]):
            diff = (logits_of(changed)[:, :cut] - base[:, :cut]).abs().max().item()
            if not diff <= scale:
                return f"logits before position {cut} changed by {diff:.3g} when later tokens changed"
    if x.shape[0] > 1:
        # Windows never overlap, so other rows cannot hold a row's targets; still, a model that mixes
        # rows is not a language model of one sequence, and its score would depend on the batching.
        changed = torch.cat([x[:1], other[1:]])
        diff = (logits_of(changed)[0] - base[0]).abs().max().item()
        if not diff <= scale:
            return f"a sequence's logits changed by {diff:.3g} when the other sequences of the batch changed"
    return ""


def count_params(program: torch.export.ExportedProgram) -> int:
    names = set(program.graph_signature.parameters)
    return sum(t.numel() for name, t in program.state_dict.items() if name in names)


if __name__ == "__main__":
    from harness.procs import boot

    boot(__name__)
