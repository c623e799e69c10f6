"""The batch feeder: the runner serves the training batches, counts them and keeps the budget. FIXED.

=====================================================================================================
The training process never holds the training split: it asks the runner for each batch through a
pipe, and the runner (where no agent code runs) draws the windows, counts the tokens and batches,
keeps the clock, and refuses a batch once the budget is spent. So tokens, steps and training
seconds are the harness's own figures, and a train.py that resets a counter, patches a clock or
rewrites `run`'s attributes changes nothing but its own view.

Wire (little-endian), one request at a time:
  request   kind u8, batch_size u32, seq_len u32      kind: 1 batch, 2 status, 3 trained
  reply     state u8, tokens u64, batches u64, elapsed f64, remaining_tokens i64, remaining_seconds f64
            then, for a batch that was served, batch_size x (seq_len + 1) uint16 token ids
  state: 0 served (for a status: budget left), 1 budget spent (nothing served), 2 bad request
A seconds budget starts at the first batch served; `trained` (sent by the worker when train()
returns) stamps the end of training, the latest stamp counting, so one that train.py sends early
is overwritten. Windows are drawn by a generator seeded with the run's seed: the same seed and
the same sequence of requests give the same batches.
=====================================================================================================
"""

from __future__ import annotations

import mmap
import os
import random
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REQUEST = struct.Struct("<BII")
REPLY = struct.Struct("<BQQdqd")
BATCH, STATUS, TRAINED = 1, 2, 3
SERVED, SPENT, BAD = 0, 1, 2
MAX_BATCH_TOKENS = 1 << 24  # one request may ask for at most 16M tokens (a 32 MiB reply)


@dataclass
class Counts:
    """What the feeder has served: the run's official tokens, steps and training time."""

    tokens: int = 0
    batches: int = 0
    first_batch: float | None = None  # the runner's monotonic clock
    trained: float | None = None

    def training_seconds(self, end: float) -> float | None:
        """From the first batch served to `trained`, or to `end` (the process's exit) without it."""
        if self.first_batch is None:
            return None
        return (self.trained if self.trained is not None else end) - self.first_batch


class Feeder:
    """Serves one run's batches from `data` (uint16 token ids) on a thread of the runner."""

    def __init__(self, data: bytes | mmap.mmap, seed: int, budget_tokens: int | None, budget_seconds: float | None) -> None:
        self.data = data
        self.n = len(data) // 2
        self.rng = random.Random(seed)
        self.budget_tokens, self.budget_seconds = budget_tokens, budget_seconds
        self.counts = Counts()
        self.requests_r, self.requests_w = os.pipe()  # the training process writes requests
        self.replies_r, self.replies_w = os.pipe()  # and reads the replies
        self._thread = threading.Thread(target=self._serve, name="feeder", daemon=True)

    @classmethod
    def from_file(cls, path: Path, seed: int, budget_tokens: int | None, budget_seconds: float | None) -> Feeder:
        """A feeder over the training split mapped from disk: a large corpus is paged in as batches
        touch it, not read whole into the runner for every run."""
        with open(path, "rb") as handle:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(handle.fileno()).st_size else b""
        return cls(data, seed, budget_tokens, budget_seconds)

    def child_fds(self) -> tuple[int, int]:
        """(request write end, reply read end): what the training process gets."""
        return self.requests_w, self.replies_r

    def start(self) -> None:
        """Serve; call once the child has its ends (the runner closes its copies of them here)."""
        os.close(self.requests_w)
        os.close(self.replies_r)
        self._thread.start()

    def stop(self) -> None:
        """After the training process died: the request pipe is at its end, the thread returns."""
        self._thread.join(timeout=5.0)
        for fd in (self.requests_r, self.replies_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if isinstance(self.data, mmap.mmap) and not self._thread.is_alive():
            self.data.close()

    def _serve(self) -> None:
        try:
            while (raw := read_exactly(self.requests_r, REQUEST.size)) is not None:
                kind, batch_size, seq_len = REQUEST.unpack(raw)
                payload, state = b"", SPENT if self._spent() else SERVED  # a status: is the budget spent?
                if kind == TRAINED:  # the latest counts: a stamp train.py sends early is overwritten by the real one
                    self.counts.trained = time.monotonic()
                elif kind == BATCH:
                    state, payload = self._batch(batch_size, seq_len)
                elif kind != STATUS:
                    state = BAD
                _write_all(self.replies_w, self._header(state) + payload)
        except BrokenPipeError:
            return  # the training process went away mid-reply: the run is over, its counts stand

    def _batch(self, batch_size: int, seq_len: int) -> tuple[int, bytes]:
        if not (1 <= batch_size and 1 <= seq_len < self.n - 1 and batch_size * (seq_len + 1) <= MAX_BATCH_TOKENS):
            return BAD, b""
        if self._spent():
            return SPENT, b""
        now = time.monotonic()
        if self.counts.first_batch is None:
            self.counts.first_batch = now
        span = 2 * (seq_len + 1)
        starts = [self.rng.randrange(0, self.n - seq_len - 1) for _ in range(batch_size)]
        payload = b"".join(self.data[2 * s : 2 * s + span] for s in starts)
        self.counts.tokens += batch_size * seq_len
        self.counts.batches += 1
        return SERVED, payload

    def _elapsed(self) -> float:
        return 0.0 if self.counts.first_batch is None else time.monotonic() - self.counts.first_batch

    def _spent(self) -> bool:
        if self.budget_tokens is not None and self.counts.tokens >= self.budget_tokens:
            return True
        return self.budget_seconds is not None and self._elapsed() >= self.budget_seconds

    def _header(self, state: int) -> bytes:
        remaining_tokens = -1 if self.budget_tokens is None else max(0, self.budget_tokens - self.counts.tokens)
        remaining_seconds = -1.0 if self.budget_seconds is None else max(0.0, self.budget_seconds - self._elapsed())
        return REPLY.pack(state, self.counts.tokens, self.counts.batches, self._elapsed(), remaining_tokens,
                          remaining_seconds)  # fmt: skip


def read_exactly(fd: int, size: int) -> bytes | None:
    """`size` bytes from `fd`, or None at the end of the pipe."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
