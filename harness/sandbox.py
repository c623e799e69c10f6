"""The training process's file sandbox: an audit hook. FIXED, do not modify.

=====================================================================================================
Defense in depth behind the guard's static checks. Installed after the training split is in memory
and before train.py is imported; `sys.addaudithook` hooks cannot be removed, so agent code cannot
undo it. It refuses, with PermissionError:
  - reading, listing or linking anything whose real path is under a denied root (the data cache,
    the user's corpus: where the validation split lives);
  - writing, creating, renaming or deleting outside the allowed roots (the run directory, the
    temporary directory, the user's caches for compilers), so the process cannot plant code that a
    later, trusted process would run (a .pth file in site-packages, an edit to the harness);
  - writing under a protected root (the Python installation, site-packages, the harness's source
    tree) anywhere but in the run directory, even where an allowed root holds it: a virtualenv
    or a checkout in the temporary directory stays read-only.
Subprocesses are not blocked here: torch.compile spawns compilers. The guard refuses agent code
that spawns them, and the runner kills every process the run started.
=====================================================================================================
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable

# Events whose first argument is a path that is read, listed or linked from.
READ_EVENTS = {"os.listdir", "os.scandir", "os.chdir", "glob.glob", "os.readlink", "os.chroot"}
# Events whose first argument (and for some the second) is a path that is changed.
WRITE_EVENTS = {
    "os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.replace", "os.truncate", "os.chmod",
    "os.chown", "os.utime", "os.link", "os.symlink", "os.setxattr", "os.removexattr", "shutil.copyfile",
    "shutil.copymode", "shutil.copystat", "shutil.copytree", "shutil.move", "shutil.rmtree", "os.mkfifo", "os.mknod",
}
TWO_PATH_EVENTS = {"os.rename", "os.replace", "os.link", "os.symlink", "shutil.copyfile", "shutil.copytree", "shutil.move"}
MOVE_EVENTS = {"os.rename", "os.replace", "shutil.move"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class Denied(PermissionError):
    pass


def install(deny: Iterable[str | os.PathLike[str]], allow_write: Iterable[str | os.PathLike[str]],
            protect: Iterable[str | os.PathLike[str]], run_dir: str | os.PathLike[str]) -> None:  # fmt: skip
    """Install the hook for the rest of this process's life."""
    denied = tuple(_real(p) for p in deny)
    writable = tuple(_real(p) for p in allow_write)
    protected = tuple(_real(p) for p in protect)
    home = (_real(run_dir),)

    def under(path: str, roots: tuple[str, ...]) -> bool:
        return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)

    def check_read(raw: Any, event: str) -> None:
        path = _path(raw)
        if path is not None and under(path, denied):
            raise Denied(f"swarm sandbox: {event} {raw!r} refused: the harness data is off limits to train.py")

    def check_write(raw: Any, event: str) -> None:
        path = _path(raw)
        if path is None:
            return
        check_read(raw, event)
        if not under(path, home) and (under(path, protected) or not under(path, writable)):
            raise Denied(f"swarm sandbox: {event} {raw!r} refused: train.py may write only in its run directory")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            raw, mode, flags = (tuple(args) + (None, None))[:3]
            check_read(raw, event)
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            )
            if writing:
                check_write(raw, event)
        elif event in READ_EVENTS and args:
            check_read(args[0], event)
        elif event in TWO_PATH_EVENTS and len(args) > 1:
            # A link or copy only reads its source, but one from the data would expose it anew.
            (check_write if event in MOVE_EVENTS else check_read)(args[0], event)
            check_write(args[1], event)
        elif event in WRITE_EVENTS and args:
            check_write(args[0], event)

    sys.addaudithook(hook)


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def _path(raw: Any) -> str | None:
    """The real path an event names, or None for file descriptors and other non-paths."""
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if not isinstance(raw, str):
        return None
    try:
        return os.path.realpath(raw)
    except (OSError, ValueError):
        return os.path.abspath(raw)
