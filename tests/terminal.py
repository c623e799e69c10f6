"""A command run in a real pseudo-terminal, as a person at a terminal runs it: the live views draw
only where stdout is a terminal, so this is how a test sees them draw, update and stop."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from typing import Callable


class Terminal:
    """Start `argv` on a pty of `columns` x `rows`; everything it writes is kept in `text`."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, columns: int = 120, rows: int = 50) -> None:
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {**(os.environ if env is None else env), "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)}
        self.process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env,
                                        start_new_session=True)  # fmt: skip
        os.close(follower)
        self._leader = leader
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._leader, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not chunk:
                return
            with self._lock:
                self._chunks.append(chunk)

    @property
    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode(errors="replace")

    @property
    def plain(self) -> str:
        """The output without colours and cursor movements."""
        return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", self.text)

    def wait_for(self, done: Callable[[str], bool], what: str, timeout: float = 180) -> str:
        """The output once `done(output)` holds; fails with the output so far after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text
            if done(text):
                return text
            if self.process.poll() is not None:
                self._reader.join(5)
                text = self.text
                if done(text):
                    return text
                raise AssertionError(f"exited ({self.process.returncode}) before {what}:\n{text[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no {what} within {timeout:.0f} s:\n{self.text[-4000:]}")

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the foreground process (the terminal's line discipline does the same)."""
        self.process.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self._reader.join(5)
        os.close(self._leader)
