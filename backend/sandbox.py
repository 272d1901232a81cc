"""A throwaway Python process for code from untrusted documents, inside a bubblewrap sandbox.

`run_python` runs a snippet in a fresh interpreter (this one's `sys.executable`, so the same packages are
importable) under `bwrap`, with the repository under study importable. Inside the sandbox:

- **Filesystem**: an empty root holding, read-only, `/usr` (and the `/bin`, `/lib*` links into it),
  `/etc/ld.so.cache`, this interpreter's prefixes (the virtualenv and the Python it was made from) and the
  repository; its working folder `/sandbox` (also `HOME`) and `/tmp` are tmpfs, gone when it ends; a minimal
  `/dev` and its own `/proc`. The home, the database, `/etc/shadow`, `~/.ray` and every other file are not
  there at all.
- **Namespaces**: its own user, PID, network (loopback only, not the host's), IPC, UTS and cgroup
  namespaces; every capability dropped; its own session (`--new-session`). The tree dies with the
  sandbox's init: when the snippet exits, when the wall-clock timeout kills bwrap, or when this process
  dies (`--die-with-parent`) — a grandchild that calls setsid() goes with it.
- **Environment**: built from nothing (bwrap itself gets only that environment, so even its own
  processes, visible in the sandbox's `/proc`, carry no secret).
- **seccomp**: a BPF program written here with `struct` (`seccomp_filter`, no libseccomp), handed to
  `bwrap --seccomp`: it kills any process not on x86_64's native ABI (i386, x32), answers EPERM to
  mount, umount2, pivot_root, chroot, the new mount API, ptrace, process_vm_readv/writev, unshare, setns,
  clone with a namespace flag, module loading, kexec, bpf, perf_event_open, userfaultfd, keyctl and the
  key syscalls, io_uring, swapon/off, reboot, clock and host changes, open_by_handle_at; ENOSYS to clone3
  (whose flags it cannot read), so the C library falls back to clone.
- **Limits**: per process, rlimits set before the snippet runs: address space (`memory_mb`), CPU time
  (the timeout plus one second), file size (`FILE_SIZE_LIMIT`, which also bounds the captured output),
  open files, no core files, and `RLIMIT_NPROC`. On the whole tree, where this process may create
  cgroups (root, with the pids and memory controllers mounted writable, v1 or v2): a pids cgroup
  (`MAX_PROCESSES`) and a memory cgroup (`memory_mb`, tmpfs files included; an OOM kill there reports
  `memory`). `RLIMIT_NPROC` counts only the sandbox's own tasks (they are in a user namespace of their own),
  but the kernel exempts uid 0 of the init namespace, which bwrap run by root keeps: as root, only the
  pids cgroup bounds a fork bomb, and where cgroups are not writable, only the timeout does (measured:
  as root, a snippet forks 253 times under the pids cgroup, all 400 it tries without it; as nobody, with
  RLIMIT_NPROC 50, 48 times however many tasks nobody runs outside). `limits_in_force()` says which apply on
  this machine; where DocTune is developed (root, cgroup v1 with pids and memory writable) both cgroups are.

What it still cannot stop: reading what it is given (the repository, `/usr`, the interpreter's
packages) and what the kernel shows every process (`/proc/cpuinfo`, `/proc/sys`, `uname`); burning CPU until
the timeout; exploiting a kernel bug in a syscall the filter allows; filling the tmpfs up to the memory
limit. Without cgroups it also cannot bound the tree as a whole: memory is then `memory_mb` per process
(children times that), the tmpfs is bounded only file by file, and as root a fork bomb runs until the timeout.
The filter exists for x86_64 only; elsewhere the sandbox is refused.

bwrap is required: where it is missing or cannot build its sandbox, `sandbox_problem()` says why and how
to fix it (`apt-get install bubblewrap`), `CurateConfig(exec_check=True)` is refused and `run_python`
raises `SandboxUnavailable` — there is no weaker fallback.

Also here: `extract_python_blocks` and `python_syntax_errors`, which find the Python in a Markdown
answer and say which blocks do not parse.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import platform
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from backend.markdown import parse_answer

Status = Literal["pass", "fail", "timeout", "memory", "error"]

OUTPUT_LIMIT = 4096
"""Bytes of stdout and of stderr kept in a `SandboxResult` (head and tail when longer)."""
FILE_SIZE_LIMIT = 16 * 1024 * 1024
"""RLIMIT_FSIZE in the sandbox: no file it writes (its captured stdout and stderr included) grows past this."""
OPEN_FILES_LIMIT = 64
"""RLIMIT_NOFILE in the sandbox."""
MAX_PROCESSES = 256
"""Tasks (threads count) the sandbox's tree may hold: the pids cgroup's limit, and its RLIMIT_NPROC. Room for a
native library's thread pool (one thread per core), not for a fork bomb."""

BWRAP_INSTALL = "apt-get install bubblewrap"
"""The command that installs bwrap (Debian, Ubuntu); `make setup` runs it."""

WORKDIR = "/sandbox"
"""The snippet's working folder and HOME inside the sandbox: a tmpfs, gone when the run ends."""

# The snippet exits with this after a MemoryError reached the top level, so the parent can tell
# "memory" apart from any other failure without parsing the traceback.
MEMORY_EXIT = 75

SNIPPET_NAME = "snippet.py"

# Runs first in the sandbox, before any user code: sets the limits, makes the repository importable, then
# executes the snippet as __main__. The limits cannot be set by bwrap; the cost is that the interpreter's own
# start-up (a few milliseconds) runs without them (the cgroups, where there are any, hold from the start).
_BOOTSTRAP = r"""
import json, os, resource, sys
_cfg = json.loads(sys.argv[1])
del sys.argv[1]
for _name, _value in _cfg["limits"].items():
    _which = getattr(resource, _name, None)
    if _which is None:
        continue
    _soft, _hard = _value
    try:
        resource.setrlimit(_which, (_soft, _hard))
    except (ValueError, OSError):
        # the current hard limit is lower than ours: keep it, lower the soft one if we may
        _cur_hard = resource.getrlimit(_which)[1]
        try:
            resource.setrlimit(_which, (min(_soft, _cur_hard), _cur_hard))
        except (ValueError, OSError):
            pass
if _cfg["repo_root"] and _cfg["repo_root"] not in sys.path:
    sys.path.insert(1, _cfg["repo_root"])
with open(%(name)r, encoding="utf-8") as _f:
    _src = _f.read()
_globals = {"__name__": "__main__", "__file__": os.path.abspath(%(name)r), "__builtins__": __builtins__}
sys.argv[0] = %(name)r
try:
    exec(compile(_src, %(name)r, "exec"), _globals)
except SystemExit:
    raise
except BaseException as _exc:
    # drop the user's objects first: printing the traceback of a MemoryError needs memory
    _globals.clear()
    import traceback
    # skip this bootstrap's own frame, so the traceback starts in the snippet
    traceback.print_exception(type(_exc), _exc, _exc.__traceback__.tb_next)
    sys.exit(%(memory_exit)d if isinstance(_exc, MemoryError) else 1)
""" % {"name": SNIPPET_NAME, "memory_exit": MEMORY_EXIT}


class SandboxUnavailable(RuntimeError):
    """bwrap is missing, or cannot build its sandbox on this machine; the message says how to fix it."""


@dataclass
class SandboxResult:
    status: Status
    """pass (exit 0), fail (non-zero exit or killed by a signal), timeout (wall clock or CPU limit),
    memory (a MemoryError under the address-space limit, or an OOM kill in the memory cgroup), error (the
    sandbox itself could not run it)."""
    returncode: int | None
    """The snippet's exit status; negative: killed by that signal; None: it never started."""
    stdout: str
    """At most `OUTPUT_LIMIT` bytes; a longer output keeps its head and tail around a marker."""
    stderr: str
    """As stdout; the tail is what holds a traceback's error line."""
    seconds: float
    """Wall-clock seconds from start to exit (or kill)."""


def run_python(code: str, *, repo_root: Path | None, timeout_s: float = 10, memory_mb: int = 512,
               extra_env: dict | None = None) -> SandboxResult:
    """Run `code` as `__main__` of a fresh Python process in the sandbox and report how it ended.

    Args:
        code: the Python source to run.
        repo_root: a folder bound read-only into the sandbox at its own path and put on PYTHONPATH (the
            repository whose package the code imports), or None.
        timeout_s: wall-clock limit; the sandbox and everything in it is killed when it passes.
            CPU time is capped at about this plus one second.
        memory_mb: the address-space limit of each process (RLIMIT_AS), and of the whole tree where a
            memory cgroup can be made. Interpreter start-up needs about 30 MB; importing large native
            libraries can need several hundred.
        extra_env: variables added to the sandbox's minimal environment (nothing else of this process's
            environment reaches it).

    Raises:
        ValueError: timeout_s or memory_mb is not positive.
        SandboxUnavailable: bwrap is missing or cannot run here (the message has the fix).
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s={timeout_s} must be positive (10 is typical)")
    if memory_mb <= 0:
        raise ValueError(f"memory_mb={memory_mb} must be positive (512 is typical)")
    problem = sandbox_problem()
    if problem:
        raise SandboxUnavailable(problem)
    root = str(Path(repo_root).resolve()) if repo_root is not None else ""
    settings = {"repo_root": root, "limits": _limits(timeout_s, memory_mb)}
    command = [sys.executable, "-s", "-c", _BOOTSTRAP, json.dumps(settings)]
    # the snippet, the filter and bwrap's status travel as files (never pipes, which a grandchild could
    # hold open); output goes to unlinked files too, where RLIMIT_FSIZE bounds it
    with _file_with(code.encode("utf-8", errors="surrogateescape")) as snippet, _file_with(seccomp_filter()) as bpf, \
            _file_with(b"") as bwrap_status, _file_with(b"") as out, _file_with(b"") as err, _cgroups(memory_mb) as group:
        fds = (snippet.fileno(), bwrap_status.fileno(), bpf.fileno())
        cmd = bwrap_command(command, root, *fds)
        if group.procs:
            # join the cgroups before bwrap starts, so nothing the snippet forks is ever outside them
            joins = " && ".join(f"echo $$ > {shlex.quote(p)}" for p in group.procs)
            cmd = ["/bin/sh", "-c", f'{joins} && exec "$@"', "sh", *cmd]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, env=_sandbox_env(root, extra_env or {}), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True, pass_fds=fds)
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # bwrap, and with it (--die-with-parent, the PID namespace) everything in the sandbox
            _kill_group(proc.pid)
            proc.wait()
        seconds = time.monotonic() - start
        bwrap_status.seek(0)  # bwrap wrote through the same open file, moving its offset
        started = b'"child-pid"' in bwrap_status.read()  # else bwrap failed before starting the snippet
        stdout, stderr = _read_bounded(out), _read_bounded(err)
        oom = group.oom_kills()
    if not started and not timed_out:
        return SandboxResult("error", None, stdout, stderr, seconds)
    returncode = _snippet_returncode(proc.returncode)
    outcome = "memory" if oom and not timed_out and returncode != 0 else _status(returncode, timed_out, stderr)
    return SandboxResult(outcome, returncode, stdout, stderr, seconds)


# --- the sandbox ------------------------------------------------------------------------------------

def bwrap_command(command: list[str], repo_root: str, snippet: int | None, status: int | None,
                  seccomp: int) -> list[str]:
    """The bwrap command line that runs `command` in the sandbox (the module docstring says what it holds).

    `snippet`, `status` and `seccomp` are file descriptors this process passes on: the snippet's source (copied
    to `/sandbox/snippet.py`), where bwrap writes its JSON status, and the compiled seccomp filter."""
    args = [shutil.which("bwrap") or "bwrap",
            "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--cap-drop", "ALL", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    if os.path.exists("/etc/ld.so.cache"):
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", WORKDIR]
    # the tmpfs first: a repository under /tmp is then bound on top of it
    for path in dict.fromkeys([*_python_roots(), repo_root]):
        if path:
            args += ["--ro-bind", path, path]
    args += ["--chdir", WORKDIR]
    if snippet is not None:
        args += ["--file", str(snippet), f"{WORKDIR}/{SNIPPET_NAME}"]
    if status is not None:
        args += ["--json-status-fd", str(status)]
    return [*args, "--seccomp", str(seccomp), "--", *command]


def _python_roots() -> list[str]:
    """The folders this interpreter runs from (its virtualenv and the Python it was made from), outside /usr."""
    roots = {str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    roots.add(str(Path(sys.executable).resolve().parent.parent))
    return sorted(r for r in roots if r != "/usr" and not r.startswith("/usr/"))


@functools.lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """Why the sandbox cannot run on this machine, with the fix; None when it can (checked once per process,
    by starting one)."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return (f"the execution check's sandbox needs Linux on x86_64 (bubblewrap, and a seccomp filter written "
                f"for that architecture); this is {sys.platform} on {platform.machine()}")
    if shutil.which("bwrap") is None:
        return f"the execution check needs bubblewrap (bwrap), which is not installed: `{BWRAP_INSTALL}`"
    with _file_with(seccomp_filter()) as bpf:
        cmd = bwrap_command([sys.executable, "-s", "-c", "pass"], "", None, None, bpf.fileno())
        try:
            probe = subprocess.run(cmd, env=_sandbox_env("", {}), capture_output=True, text=True, timeout=60,
                                   pass_fds=(bpf.fileno(),))
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap (bwrap) could not start its sandbox: {exc}"
    if probe.returncode != 0:
        return (f"bubblewrap (bwrap) could not build its sandbox here (it needs user namespaces): "
                f"{probe.stderr.strip()[-500:]}")
    return None


def limits_in_force() -> dict[str, str]:
    """Which limit bounds what on this machine, in words (for the README's Troubleshooting and bug reports)."""
    with _cgroups(64) as group:
        whole_tree = sorted(group.kinds)
    root = os.geteuid() == 0
    processes = ("pids cgroup" if "pids" in whole_tree
                 else "timeout only (root: RLIMIT_NPROC does not bind)" if root else "RLIMIT_NPROC")
    return {"processes": processes,
            "memory": "memory cgroup (whole tree) and RLIMIT_AS" if "memory" in whole_tree
            else "RLIMIT_AS (per process)",
            "cpu": "RLIMIT_CPU and the wall-clock timeout", "output": "RLIMIT_FSIZE",
            "seccomp": "x86_64 BPF filter written with struct"}


# --- seccomp ------------------------------------------------------------------------------------------

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
DENIED_SYSCALLS = {
    # filesystem views
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "name_to_handle_at": 303, "open_by_handle_at": 304,
    # other processes
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    # namespaces
    "unshare": 272, "setns": 308,
    # the kernel itself
    "init_module": 175, "finit_module": 313, "delete_module": 176, "create_module": 174, "kexec_load": 246,
    "kexec_file_load": 320, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "iopl": 172, "ioperm": 173,
    "syslog": 103, "uselib": 134, "lookup_dcookie": 212, "quotactl": 179,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "keyctl": 250, "add_key": 248, "request_key": 249,
    # the host
    "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163, "vhangup": 153, "settimeofday": 164,
    "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159, "sethostname": 170, "setdomainname": 171,
}
"""x86_64 syscall numbers the filter answers with EPERM."""
CLONE = 56
CLONE3 = 435
CLONE_NAMESPACES = 0x7E020000
"""CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: clone with any of them is refused."""

_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_EPERM, _ENOSYS = 1, 38
# offsets in struct seccomp_data: nr, arch, then args[0] (its low 32 bits first, little-endian)
_NR, _ARCH, _ARG0 = 0, 4, 16


def seccomp_filter() -> bytes:
    """The sandbox's seccomp filter as a classic BPF program (struct sock_filter[]), as `bwrap --seccomp` reads it."""
    # (code, jump-if-true, jump-if-false, k); jumps name a label or 0 (the next instruction)
    prog: list[tuple[int, str | int, str | int, int]] = [
        (_LD_W_ABS, 0, 0, _ARCH), (_JEQ, 0, "kill", AUDIT_ARCH_X86_64),
        (_LD_W_ABS, 0, 0, _NR), (_JGE, "eperm", 0, X32_SYSCALL_BIT), (_JEQ, "enosys", 0, CLONE3),
        *[(_JEQ, "eperm", 0, nr) for nr in sorted(DENIED_SYSCALLS.values())],
        (_JEQ, 0, "allow", CLONE), (_LD_W_ABS, 0, 0, _ARG0), (_JSET, "eperm", "allow", CLONE_NAMESPACES),
    ]
    ends = {"allow": _RET_ALLOW, "eperm": _RET_ERRNO | _EPERM, "enosys": _RET_ERRNO | _ENOSYS,
            "kill": _RET_KILL_PROCESS}
    at = {label: len(prog) + i for i, label in enumerate(ends)}
    prog += [(_RET, 0, 0, value) for value in ends.values()]

    def offset(i: int, target: str | int) -> int:
        return target if isinstance(target, int) else at[target] - i - 1

    return b"".join(struct.pack("<HBBI", code, offset(i, jt), offset(i, jf), k)
                    for i, (code, jt, jf, k) in enumerate(prog))


# --- cgroups ------------------------------------------------------------------------------------------

@dataclass
class _Group:
    """One run's cgroups (none where they cannot be made)."""
    kinds: dict[str, Path]
    """Controller (pids, memory) → the run's cgroup folder."""

    @property
    def procs(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in dict.fromkeys(self.kinds.values())]

    def oom_kills(self) -> int:
        """Processes the kernel killed for passing the memory cgroup's limit."""
        folder = self.kinds.get("memory")
        for name in ("memory.events", "memory.oom_control"):  # v2, v1
            try:
                for line in (folder / name).read_text().splitlines():
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
            except (OSError, TypeError):
                continue
        return 0


@contextmanager
def _cgroups(memory_mb: int) -> Iterator[_Group]:
    """A pids and a memory cgroup for one run, below this process's own, where it may make them (v1 or v2);
    afterwards whatever is still in them is killed and they are removed."""
    name = f"doctune-sandbox-{uuid.uuid4().hex[:12]}"
    limits = {"pids": [("pids.max", MAX_PROCESSES)],
              "memory": [("memory.max", memory_mb << 20), ("memory.swap.max", 0),  # v2
                         ("memory.limit_in_bytes", memory_mb << 20)]}                # v1
    kinds: dict[str, Path] = {}
    try:
        for controller, files in limits.items():
            parent = _own_cgroup(controller)
            if parent is None:
                continue
            folder = parent / name
            try:
                folder.mkdir(exist_ok=True)
                written = [_write(folder / f, v) for f, v in files if (folder / f).exists()]
            except OSError:
                written = []
            if any(written):
                kinds[controller] = folder
            else:
                _remove_cgroup(folder)
        yield _Group(kinds)
    finally:
        for folder in dict.fromkeys(kinds.values()):
            _remove_cgroup(folder)


def _own_cgroup(controller: str) -> Path | None:
    """The folder of this process's cgroup for `controller` (v1 hierarchy, else v2), if it has that controller."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return Path("/sys/fs/cgroup", controller) / path.lstrip("/")
    v2 = Path("/sys/fs/cgroup")
    for line in lines:
        _, names, path = line.split(":", 2)
        if not names:
            try:
                if controller in (v2 / path.lstrip("/") / "cgroup.subtree_control").read_text().split():
                    return v2 / path.lstrip("/")
            except OSError:
                return None
    return None


def _write(path: Path, value: int) -> bool:
    """Write a cgroup limit; False where the kernel refuses it."""
    try:
        path.write_text(str(value))
        return True
    except OSError:
        return False


def _remove_cgroup(folder: Path) -> None:
    """SIGKILL what is left in a cgroup, then remove it (a killed task leaves it a moment later)."""
    deadline = time.monotonic() + 2
    while True:
        try:
            for pid in (folder / "cgroup.procs").read_text().split():
                _kill(int(pid))
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)


# --- around the run -----------------------------------------------------------------------------------

def _limits(timeout_s: float, memory_mb: int) -> dict[str, tuple[int, int]]:
    """The rlimits the snippet's process sets on itself, by `resource` constant name, as (soft, hard)."""
    cpu = int(timeout_s) + 1
    return {
        "RLIMIT_AS": (memory_mb * 1024 * 1024,) * 2,
        # soft sends SIGXCPU, hard one second later SIGKILL
        "RLIMIT_CPU": (cpu, cpu + 1),
        "RLIMIT_FSIZE": (FILE_SIZE_LIMIT,) * 2,
        "RLIMIT_NOFILE": (OPEN_FILES_LIMIT,) * 2,
        "RLIMIT_CORE": (0, 0),
        # counted in the sandbox's own user namespace, so only its tasks count; root is exempt (see above)
        "RLIMIT_NPROC": (MAX_PROCESSES,) * 2,
    }


def _sandbox_env(repo_root: str, extra_env: dict) -> dict[str, str]:
    """The environment of bwrap and the snippet, built from nothing: secrets in ours never reach them."""
    # a fixed PATH (this interpreter's folder first) rather than ours, which may name private tools
    path = os.pathsep.join(dict.fromkeys([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]))
    env = {
        "PATH": path,
        "HOME": WORKDIR,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }
    if repo_root:
        env["PYTHONPATH"] = repo_root
    env.update({str(k): str(v) for k, v in extra_env.items()})
    return env


def _snippet_returncode(returncode: int) -> int:
    """bwrap reports a snippet killed by signal N as 128 + N; as Popen does, we say -N (we killed bwrap: -9)."""
    return -(returncode - 128) if 128 < returncode <= 128 + 64 else returncode


def _kill_group(pgid: int) -> None:
    """SIGKILL a process group; gone already is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int) -> None:
    """SIGKILL a process; gone already is fine."""
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def _file_with(data: bytes) -> Iterator:
    """An unlinked temporary file holding `data`, positioned at its start."""
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        yield f


def _read_bounded(f) -> str:
    """At most OUTPUT_LIMIT bytes of a file as text: all of it, or its head and tail around a marker."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    if size <= OUTPUT_LIMIT:
        return f.read().decode("utf-8", errors="replace")
    marker = f"\n... [{{}} bytes cut] ...\n"
    half = (OUTPUT_LIMIT - len(marker) - 12) // 2
    head = f.read(half)
    f.seek(size - half)
    tail = f.read(half)
    cut = marker.format(size - 2 * half)
    return head.decode("utf-8", errors="replace") + cut + tail.decode("utf-8", errors="replace")


def _status(returncode: int, timed_out: bool, stderr: str) -> Status:
    """How the run ended, from the exit status, whether we killed it, and the error line."""
    if timed_out or returncode == -signal.SIGXCPU:
        return "timeout"
    if returncode == 0:
        return "pass"
    if returncode == MEMORY_EXIT:
        return "memory"
    # a MemoryError the bootstrap could not catch (raised in a thread, at shutdown, during start-up)
    last = [line for line in stderr.strip().splitlines()[-3:]]
    if any(line.startswith("MemoryError") or "Cannot allocate memory" in line for line in last):
        return "memory"
    return "fail"


# --- Python in Markdown ---------------------------------------------------------------------------

PYTHON_LABELS = {"python", "py", "python3", "py3"}
"""Fence info strings (their first word, lower case) that mark a block as Python."""


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced block of a model's answer as (language, content), in order; an unclosed one runs to the end.

    Tabs become spaces (4 columns), as they did before the shared parser, so code that mixes tabs and spaces
    in its indentation parses as it did."""
    return [(f.language, "\n".join(line.expandtabs(4) for line in f.content.split("\n")))
            for f in parse_answer(text)]


def _parses(src: str) -> bool:
    """Whether src is Python that `ast.parse` accepts."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(src)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def _looks_like_python(src: str) -> bool:
    """An unlabeled block counts as Python when it parses and does more than name a value.

    `ls`, `42` and `{"a": 1}` all parse, but are a command, an output and JSON.
    """
    if not src.strip() or not _parses(src):
        return False
    try:
        json.loads(src)
        return False
    except ValueError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        body = ast.parse(src).body
    trivial = (ast.Name, ast.Constant, ast.Attribute, ast.Tuple, ast.List, ast.Dict, ast.Set, ast.UnaryOp)
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, trivial)) for node in body)


def extract_python_blocks(text: str) -> list[str]:
    """The Python code blocks of a Markdown text, in order.

    A block counts when its fence is labeled python/py/python3/py3, or it has no label and its content
    parses as Python (and is more than a bare name, number or JSON value). Labeled blocks count even
    when they do not parse: that is what `python_syntax_errors` reports.
    """
    out = []
    for label, body in _fenced_blocks(text):
        if label in PYTHON_LABELS or (not label and _looks_like_python(body)):
            out.append(body)
    return out


def python_syntax_errors(text: str) -> list[str]:
    """One "block N line L: message" per Python block of `text` that `ast.parse` rejects (N counts from 1)."""
    errors = []
    for n, block in enumerate(extract_python_blocks(text), start=1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ast.parse(block)
        except SyntaxError as exc:
            errors.append(f"block {n} line {exc.lineno or 0}: {exc.msg}")
        except (ValueError, RecursionError, MemoryError) as exc:
            errors.append(f"block {n} line 0: {type(exc).__name__}: {exc}")
    return errors
