"""The operating-system sandbox of the processes that touch agent code or held-out data. FIXED.

=====================================================================================================
`confine(read, write, devices)` is called first thing in the training and the evaluation process,
before any agent code (or its model file) is touched; everything the process starts inherits it.
Plain Linux, as an ordinary user, pure ctypes (no dependency: the few syscalls are stable ABI):
  userns+netns   unshare(USER|NET|NS|PID): a network namespace with no interface up, so no host,
                 no loopback (the swarm's NATS included), no abstract unix socket of the host
  pidns          the process forks; its child is PID 1 of a new PID namespace with a fresh /proc,
                 so no host process (the runner, the evaluator, a sibling run) can be seen, and
                 when it exits the kernel kills everything left in the namespace: no daemon lives on
  landlock       read+execute beneath `read`, everything beneath `write`, read-write-ioctl on
                 `devices`; nothing else can be opened, created, renamed or linked; TCP bind and
                 connect denied; with ABI 6, signals and abstract unix sockets scoped to the sandbox
  seccomp        socket(AF_UNIX) refused (Landlock does not cover connect() to a pathname socket),
                 and so are prctl(PDEATHSIG) and prctl(DUMPABLE): the child cannot undo its tie
                 to the supervising parent nor hide from the runner's sweep
The parent stays outside as a supervisor: it holds no descriptor of the run, waits for the child,
kills it on SIGTERM, and exits as the child did. `python jail.py --probe` prints which layers this
machine offers; `python jail.py --check DIR SECRET PORT` tries to escape and prints what held.
=====================================================================================================
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import platform
import select
import signal
import socket
import struct
import subprocess
import sys
from typing import Iterable

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 38, 22
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV  # the rest are for directories
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1, 2
# (audit arch, socket, prctl) syscall numbers for the seccomp filter, per machine.
SECCOMP_ARCH = {"x86_64": (0xC000003E, 41, 157), "aarch64": (0xC00000B7, 198, 167)}
# What a Python process with torch needs of the system, besides its own installation.
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/sys", "/proc", "/etc/ld.so.cache",
               "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/passwd", "/etc/group",
               "/etc/nsswitch.conf", "/etc/alternatives", "/etc/os-release", "/dev/urandom", "/dev/random",
               "/dev/zero")
SYSTEM_WRITE = ("/dev/null", "/dev/full")
GPU_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset", "/dev/nvidia-caps",
               "/dev/dri", "/dev/kfd", *(f"/dev/nvidia{i}" for i in range(16)))
UNTRUSTED = "none (untrusted)"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class JailError(OSError):
    """A layer of the sandbox could not be put in place: the process must not go on."""


def landlock_abi() -> int:
    """The Landlock ABI version of this kernel, 0 if it has none (or it is disabled)."""
    version = _libc.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(version), 0)


def python_paths() -> list[str]:
    """Where this interpreter and its packages live (not the user's site: nothing trusted is there)."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    return list(dict.fromkeys([sys.prefix, sys.base_prefix, sys.exec_prefix, paths["stdlib"], paths["platstdlib"],
                               paths["purelib"], paths["platlib"], *site.getsitepackages(),
                               os.path.dirname(os.path.realpath(sys.executable))]))


def gpu_devices() -> list[str]:
    return [path for path in GPU_DEVICES if os.path.exists(path)]


def confine(read: Iterable[str], write: Iterable[str], devices: Iterable[str] = ()) -> str:
    """Enter the sandbox; returns (in the confined child) the layers in force. Never returns in the parent.

    Raises JailError, before anything is confined, where a layer is missing.
    """
    abi = landlock_abi()
    if abi < 1:
        raise JailError("Landlock is not available in this kernel (Linux 5.13+ with landlock in lsm=)")
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID) != 0:
        raise JailError(ctypes.get_errno(), f"unshare(user, mount, net, pid) failed: {os.strerror(ctypes.get_errno())}")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)
    alive_read, alive_write = os.pipe()
    child = os.fork()
    if child:
        _supervise(child, alive_write)
    os.close(alive_write)
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    if select.select([alive_read], [], [], 0)[0]:  # the supervisor died before the call: nobody waits for us
        os._exit(1)
    os.close(alive_read)
    # A fresh /proc of the new PID namespace over the host's; private, so nothing propagates back.
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount(/, private)")
    _check(_libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount(/proc)")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    _landlock(abi, read, write, devices)
    layers = [f"landlock{abi}", "userns", "netns", "pidns"]
    if _seccomp():
        layers.append("seccomp")
    return "+".join(layers)


def _supervise(child: int, alive: int) -> None:
    """The parent's whole life after the fork: hold no descriptor of the run, wait, exit as the child did."""
    os.closerange(3, alive)
    os.closerange(alive + 1, os.sysconf("SC_OPEN_MAX"))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: (os.kill(child, signal.SIGKILL), os._exit(128 + signal.SIGTERM)))
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):  # die the same way, so the runner sees e.g. -9 from the OOM killer
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _landlock(abi: int, read: Iterable[str], write: Iterable[str], devices: Iterable[str]) -> None:
    handled = (1 << 13) - 1 | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0) | (FS_IOCTL_DEV if abi >= 5 else 0)
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("=QQQ", handled, net, scoped)  # no net rule is ever added: every TCP port is denied
    ruleset = _check(_libc.syscall(SYS_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0)),
                     "landlock_create_ruleset")
    try:
        reading = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
        rules = [(p, reading) for p in (*SYSTEM_READ, *read)] + [(p, handled) for p in write]
        rules += [(p, FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV) for p in (*SYSTEM_WRITE, *devices)]
        for path, rights in rules:
            _allow(ruleset, path, rights & handled)
        _check(_libc.syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _allow(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # e.g. /lib32 on a 64-bit-only system: nothing to grant
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            rights &= FILE_RIGHTS
        rule = struct.pack("=Qi", rights, fd)
        _check(_libc.syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH), rule,
                             ctypes.c_uint32(0)), f"landlock_add_rule({path})")
    finally:
        os.close(fd)


def _seccomp() -> bool:
    """Install the filter (see the banner); False on a machine whose syscall numbers we do not know."""
    known = SECCOMP_ARCH.get(platform.machine())
    if known is None:
        return False
    arch, sys_socket, sys_prctl = known
    deny, allow = 0x00050000 | 1, 0x7FFF0000  # SECCOMP_RET_ERRNO | EPERM, SECCOMP_RET_ALLOW
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    # (code, jump if true, jump if false, k); jumps are counted from the next instruction.
    program = [
        (ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, deny),      # another ABI (i386, x32 below): refused
        (ld, 0, 0, 0), (jge, 0, 1, 0x40000000), (ret, 0, 0, deny),
        (jeq, 2, 0, sys_socket), (jeq, 3, 0, sys_prctl), (ret, 0, 0, allow),
        (ld, 0, 0, 16), (jeq, 4, 3, socket.AF_UNIX),              # socket(domain): unix sockets refused
        (ld, 0, 0, 16), (jeq, 2, 0, PR_SET_PDEATHSIG), (jeq, 1, 0, PR_SET_DUMPABLE),
        (ret, 0, 0, allow), (ret, 0, 0, deny),
    ]
    code = b"".join(struct.pack("=HBBI", *op) for op in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HP", len(program), ctypes.addressof(buffer))
    _check(_libc.prctl(PR_SET_SECCOMP, 2, fprog, 0, 0), "prctl(SECCOMP_MODE_FILTER)")
    return True


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise JailError(errno, f"{what} failed: {os.strerror(errno)}")
    return result


@functools.lru_cache(maxsize=1)
def support() -> str:
    """The layers a confined process gets on this machine ("landlock7+userns+..."), or "error: why".

    Measured by confining a fresh interpreter (never a fork of a caller that may run threads), once.
    """
    done = subprocess.run([sys.executable, "-I", "-S", __file__, "--probe"], capture_output=True, text=True, timeout=60)
    try:
        return str(json.loads(done.stdout)["layers"])
    except (ValueError, KeyError, TypeError):
        return f"error: the probe exited with code {done.returncode}: {done.stderr.strip()[-300:]}"


def _probe() -> str:
    try:
        return confine(python_paths(), [])
    except JailError as exc:
        return f"error: {exc}"


def _escape_attempts(run_dir: str, secret: str, port: int) -> dict[str, object]:
    """Confined already: what each attempt to get out gave (True: it worked)."""
    import subprocess

    def tried(action) -> object:  # type: ignore[no-untyped-def]
        try:
            return action() or True
        except OSError as exc:
            return f"refused: {exc.strerror or exc}"

    def connect() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass

    def write_outside() -> None:
        with open(os.path.join(os.path.dirname(secret), "planted.txt"), "w") as handle:
            handle.write("x")

    def unix() -> None:
        socket.socket(socket.AF_UNIX).close()

    return {
        "read_secret": tried(lambda: open(secret, "rb").read() and None),
        "shell_read_secret": subprocess.run(["cat", secret], capture_output=True).returncode == 0,
        "connect_tcp": tried(connect),
        "write_outside": tried(write_outside),
        "write_run_dir": tried(lambda: open(os.path.join(run_dir, "ok.txt"), "w").close()),
        "unix_socket": tried(unix),
        "visible_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        print(json.dumps({"landlock_abi": landlock_abi(), "layers": _probe()}))
    elif sys.argv[1:2] == ["--check"] and len(sys.argv) == 5:
        directory, secret_path, tcp_port = sys.argv[2], sys.argv[3], int(sys.argv[4])
        in_force = confine(python_paths(), [directory])
        print(json.dumps({"layers": in_force, **_escape_attempts(directory, secret_path, tcp_port)}), flush=True)
    else:
        sys.exit("usage: python jail.py --probe | --check RUN_DIR SECRET_FILE TCP_PORT")
