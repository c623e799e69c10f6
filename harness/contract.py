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
                        Deterministic for the seed and the sequence of calls.
    run.done()          True once the training budget is spent; loop `while not run.done():`.
                        After that, run.batch() raises.
    run.remaining_tokens / run.remaining_seconds
                        what is left of the budget (None for the kind this tier does not use).
                        The seconds budget starts at the first run.batch() call.
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
import time
from typing import Any

import torch


class BudgetExhausted(RuntimeError):
    """run.batch() was called after run.done() became True."""


class Diverged(ArithmeticError):
    """run.log() received a non-finite loss: the run stops and is reported as diverged."""


class Run:
    """What train(run) gets. Attributes starting with an underscore belong to the harness."""

    def __init__(
        self,
        *,
        tokens: torch.Tensor,
        device: str,
        seed: int,
        vocab_size: int,
        context_len: int,
        budget_tokens: int | None,
        budget_seconds: float | None,
        progress_fd: int | None = None,
    ) -> None:
        self.device = device
        self.seed = seed
        self.vocab_size = vocab_size
        self.context_len = context_len
        # bf16 autocast on CUDA and on CPUs with native bf16 (measured ~2x over fp32 on AVX512-BF16).
        self.autocast_dtype: torch.dtype | None = torch.bfloat16
        self._tokens = tokens
        self._budget_tokens = budget_tokens
        self._budget_seconds = budget_seconds
        self._progress_fd = progress_fd
        # A CPU generator makes the data order independent of the device and of the model's RNG use.
        self._generator = torch.Generator().manual_seed(seed)
        self._used_tokens = 0
        self._batches = 0
        self._started: float | None = None
        self._last_loss: float | None = None

    # --- for train.py ----------------------------------------------------------------------------

    def batch(self, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.done():
            raise BudgetExhausted("the training budget is spent: stop when run.done() is True")
        if batch_size < 1 or seq_len < 1 or seq_len + 1 > self._tokens.numel():
            raise ValueError(f"run.batch: bad shape ({batch_size}, {seq_len})")
        if self._started is None:
            self._started = time.perf_counter()
        starts = torch.randint(0, self._tokens.numel() - seq_len - 1, (batch_size,), generator=self._generator)
        offsets = torch.arange(seq_len + 1)
        windows = self._tokens[starts[:, None] + offsets].long()
        self._used_tokens += batch_size * seq_len
        self._batches += 1
        x, y = windows[:, :-1], windows[:, 1:]
        if self.device.startswith("cuda"):
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.contiguous(), y.contiguous()

    def done(self) -> bool:
        if self._budget_tokens is not None and self._used_tokens >= self._budget_tokens:
            return True
        return self._budget_seconds is not None and self.elapsed() >= self._budget_seconds

    @property
    def remaining_tokens(self) -> int | None:
        return None if self._budget_tokens is None else max(0, self._budget_tokens - self._used_tokens)

    @property
    def remaining_seconds(self) -> float | None:
        return None if self._budget_seconds is None else max(0.0, self._budget_seconds - self.elapsed())

    def elapsed(self) -> float:
        """Seconds since the first run.batch() call (0 before it)."""
        return 0.0 if self._started is None else time.perf_counter() - self._started

    def log(self, step: int, loss: float | torch.Tensor, **extra: float) -> None:
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        self._last_loss = value
        if self._progress_fd is not None:
            record: dict[str, Any] = {"step": int(step), "loss": value, "tokens": self._used_tokens, "elapsed": self.elapsed()}
            record.update({key: float(v) for key, v in extra.items()})
            try:
                os.write(self._progress_fd, (json.dumps(record) + "\n").encode())
            except (BlockingIOError, BrokenPipeError):
                pass  # progress is best effort: a slow or gone reader must not stop training
        if not math.isfinite(value):
            raise Diverged(f"training loss is {value} at step {step}")

    # --- for the harness ---------------------------------------------------------------------------

    def _metrics(self) -> dict[str, Any]:
        return {
            "steps": self._batches,  # counted here, not taken from train.py's own step numbers
            "tokens": self._used_tokens,
            "training_seconds": self.elapsed(),
            "last_loss": self._last_loss,
        }
