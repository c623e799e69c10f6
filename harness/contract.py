"""The contract between the harness and train.py. FIXED, do not modify.

=====================================================================================================
train.py defines one function:

    def train(run: Run) -> torch.nn.Module

and may import from the harness only this module (`from harness.contract import Run`).
The harness calls `train(run)` once, in a fresh process, with the global torch RNG already
seeded with `run.seed`. What `run` gives you:

    run.device          "cpu" or "cuda:N": put the model and the work here
    run.seed            the run's seed (the harness has already called torch.manual_seed with it)
    run.vocab_size      token ids are 0 .. vocab_size - 1 (the last id starts every document)
    run.context_len     the sequence length the returned model is evaluated at
    run.autocast_dtype  the recommended autocast dtype (torch.bfloat16) or None for plain fp32
    run.batch(batch_size, seq_len) -> (x, y)
                        a batch of random windows of the training split, int64 tensors of shape
                        (batch_size, seq_len) on run.device, y = x shifted by one token.
                        Deterministic for the seed and the sequence of calls. The runner serves
                        each batch (this process never holds the split), counts the tokens and
                        batches and keeps the clock: those are the run's official figures.
    run.done()          True once the training budget is spent; loop `while not run.done():`.
                        After that, run.batch() raises.
    run.remaining_tokens / run.remaining_seconds
                        what is left of the budget (None for the kind this tier does not use).
                        The seconds budget starts at the first run.batch() call. A run whose
                        process lives on past its seconds budget by more than the tier's
                        allowance (for the export; batches kept back do not buy time) is
                        refused as over_budget.
    run.log(step, loss, **extra)
                        progress for the runner (step count, loss, any other floats). A
                        non-finite loss ends the run at once as "diverged". float(loss) synchronises
                        the GPU, so log every few steps, not every step, when speed matters.

The returned module maps token ids (int64, shape (B, T)) to logits (shape (B, T, vocab_size)),
where position t depends only on tokens 0..t of its own sequence. The harness puts it in eval
mode, casts it to fp32 and exports it with torch.export at the evaluation shape
(eval_batch, context_len); a model that cannot be exported is a crash whose reason you see.
The score (val_bpb: bits per byte of validation text, lower is better) is computed afterwards in
a separate process, by harness code, from that exported program's logits, on validation data that
this process never has. Nothing printed, returned or patched here changes it. A model whose
earlier logits change when later tokens (or other sequences of the batch) change is rejected,
and so is one that writes to its buffers (keeps state between calls).

Rules the guard checks before a run: train.py is the only file changed; it imports only torch,
math, functools, dataclasses, typing, itertools, collections, time, __future__ and
harness.contract; no dunder attributes, no private attributes of run; and nothing on the deny
list (harness/guard.py keeps it; these lines name all of it, and a test checks that they agree):
    denied torch modules (by import or attribute): torch.hub, torch.utils.cpp_extension,
        torch.package, torch.serialization, torch.multiprocessing, torch.distributed,
        torch.utils.data, torch.testing.
    denied names: __import__, breakpoint, compile, delattr, eval, exec, exit, globals, input,
        locals, memoryview, open, quit, setattr, vars.
    denied attributes (on any object, and as getattr/hasattr's name): load, save, from_file,
        load_library, load_inline, load_state_dict_from_url, cpp_extension, classes, hub,
        serialization, package, os, sys, ctypes, subprocess, importlib, builtins, io, pickle,
        marshal, shutil, socket, inspect, gc, types, threading, multiprocessing, pathlib, tempfile,
        glob, platform, posix, runpy, mmap, resource, urllib, _getframe, f_globals, f_locals,
        f_builtins, f_back, f_code, gi_frame, gi_code, cr_frame, ag_frame, tb_frame, tb_next, _C,
        _ops, _classes, _library, _utils_internal, _jit_internal, _export.
torch.os, torch.sys and the like are those very modules, so they are denied as attributes.
The guard is defence in depth: the sandbox and the evaluator's own checks stand behind it.
=====================================================================================================
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch

from harness import feeder


class BudgetExhausted(RuntimeError):
    """run.batch() was called after run.done() became True."""


class Diverged(ArithmeticError):
    """run.log() received a non-finite loss: the run stops and is reported as diverged."""


class Run:
    """What train(run) gets. Attributes starting with an underscore belong to the harness.

    Batches come from the runner (harness.feeder), which counts them and keeps the budget: nothing
    here is the official record of tokens, steps or time, so nothing here is worth changing.
    """

    def __init__(
        self,
        *,
        feed: tuple[int, int],
        device: str,
        seed: int,
        vocab_size: int,
        context_len: int,
        progress_fd: int | None = None,
    ) -> None:
        self.device = device
        self.seed = seed
        self.vocab_size = vocab_size
        self.context_len = context_len
        # bf16 autocast on CUDA and on CPUs with native bf16 (measured ~2x over fp32 on AVX512-BF16).
        self.autocast_dtype: torch.dtype | None = torch.bfloat16
        self._feed = feed  # (request write end, reply read end) of the runner's feeder
        self._progress_fd = progress_fd
        self._state = (0, 0, 0.0, -1, -1.0)  # tokens, batches, elapsed, remaining tokens, remaining seconds
        self._last_loss: float | None = None

    # --- for train.py ----------------------------------------------------------------------------

    def batch(self, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"run.batch: bad shape ({batch_size}, {seq_len})")
        state, payload = self._ask(feeder.BATCH, batch_size, seq_len)
        if state == feeder.SPENT:
            raise BudgetExhausted("the training budget is spent: stop when run.done() is True")
        if state != feeder.SERVED:
            raise ValueError(f"run.batch: bad shape ({batch_size}, {seq_len}) for this training split")
        windows = torch.frombuffer(bytearray(payload), dtype=torch.uint16).view(batch_size, seq_len + 1).long()
        x, y = windows[:, :-1], windows[:, 1:]
        if self.device.startswith("cuda"):
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.contiguous(), y.contiguous()

    def done(self) -> bool:
        return self._ask(feeder.STATUS)[0] == feeder.SPENT

    @property
    def remaining_tokens(self) -> int | None:
        self._ask(feeder.STATUS)
        return None if self._state[3] < 0 else self._state[3]

    @property
    def remaining_seconds(self) -> float | None:
        self._ask(feeder.STATUS)
        return None if self._state[4] < 0 else self._state[4]

    def elapsed(self) -> float:
        """Seconds since the first run.batch() call (0 before it), by the runner's clock."""
        self._ask(feeder.STATUS)
        return self._state[2]

    def log(self, step: int, loss: float | torch.Tensor, **extra: float) -> None:
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        self._last_loss = value
        if self._progress_fd is not None:
            record: dict[str, Any] = {"step": int(step), "loss": value, "tokens": self._state[0], "elapsed": self._state[2]}
            record.update({key: float(v) for key, v in extra.items()})
            try:
                os.write(self._progress_fd, (json.dumps(record) + "\n").encode())
            except (BlockingIOError, BrokenPipeError):
                pass  # progress is best effort: a slow or gone reader must not stop training
        if not math.isfinite(value):
            raise Diverged(f"training loss is {value} at step {step}")

    # --- for the harness ---------------------------------------------------------------------------

    def _ask(self, kind: int, batch_size: int = 0, seq_len: int = 0) -> tuple[int, bytes]:
        """One request to the runner's feeder; (state, the batch's bytes or b"")."""
        ask, answer = self._feed
        os.write(ask, feeder.REQUEST.pack(kind, batch_size, seq_len))
        header = feeder.read_exactly(answer, feeder.REPLY.size)
        if header is None:
            raise BudgetExhausted("the runner stopped serving batches")
        state, *rest = feeder.REPLY.unpack(header)
        self._state = tuple(rest)  # type: ignore[assignment]
        if state != feeder.SERVED or kind != feeder.BATCH:
            return state, b""
        payload = feeder.read_exactly(answer, 2 * batch_size * (seq_len + 1))
        if payload is None:
            raise BudgetExhausted("the runner stopped serving batches")
        return state, payload

    def _trained(self) -> None:
        """Tell the runner that train() returned: the end of training by its clock."""
        self._ask(feeder.TRAINED)
