"""A throwaway Python process for generated code: resource limits, a clean environment, no secrets.

`run_python` runs a snippet in a fresh interpreter (this one's `sys.executable`, so the same
packages are importable) inside a temporary folder that is deleted afterwards, with the repository
under study importable. What it guards against is code that loops, eats memory, writes huge files,
leaks file descriptors or reads API keys from the environment, and — on Linux — code that writes
anywhere but its own folder: the child enters a mount namespace of its own (a user namespace too when
not root) in which every filesystem but its temporary folder (and /dev) is read-only. Code from a
document that reaches a sample (`curate --exec-check`) can therefore read but not change the machine.
Where namespaces are unavailable (not Linux, or forbidden by the kernel), the child runs without that
isolation and says so on its stderr (`FS_ISOLATION_OFF`). There is no seccomp and no network isolation.

Also here: `extract_python_blocks` and `python_syntax_errors`, which find the Python in a Markdown
answer and say which blocks do not parse.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from backend.markdown import parse_answer

Status = Literal["pass", "fail", "timeout", "memory", "error"]

OUTPUT_LIMIT = 4096
"""Bytes of stdout and of stderr kept in a `SandboxResult` (head and tail when longer)."""
FILE_SIZE_LIMIT = 16 * 1024 * 1024
"""RLIMIT_FSIZE of the child: no file it writes (its captured stdout and stderr included) grows past this."""
OPEN_FILES_LIMIT = 64
"""RLIMIT_NOFILE of the child."""
EXTRA_PROCESSES = 64
"""Processes (threads count) the child may add on top of what its user already runs (RLIMIT_NPROC).
Not set for root, which the kernel exempts from RLIMIT_NPROC anyway; there the process-group kill
after the run is what bounds spawned processes."""

FS_ISOLATION_OFF = "doctune-sandbox: no filesystem isolation"
"""The first stderr line of a child that could not make the filesystem read-only (followed by the reason)."""

# The child exits with this after a MemoryError reached the top level, so the parent can tell
# "memory" apart from any other failure without parsing the traceback.
MEMORY_EXIT = 75

SNIPPET_NAME = "snippet.py"

# Runs first in the child, before any user code: sets the limits, makes the repository importable,
# then executes the snippet as __main__. Limits are set here rather than in a `preexec_fn`, because
# preexec_fn can deadlock when the parent has threads (Ray workers and actors do); the cost is that
# the interpreter's own start-up (a few milliseconds) runs unlimited.
_BOOTSTRAP = r"""
import json, os, resource, sys
_cfg = json.loads(sys.argv[1])
del sys.argv[1]


def _read_only_except(workdir):
    # a mount namespace of our own (and a user namespace when not root, so we may mount in it), in which
    # every mount but the work folder and /dev is remounted read-only; the parent's view is untouched
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(0x00020000 | (0 if uid == 0 else 0x10000000)) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
        1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
    kept = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024, "nodiratime": 2048,
            "relatime": 1 << 21, "strictatime": 1 << 24}

    def call(src, target, flags):
        if libc.mount(src, target.encode(), None, flags, None) != 0:
            raise OSError(ctypes.get_errno(), f"mount {target}")

    call(None, "/", MS_REC | MS_PRIVATE)
    call(workdir.encode(), workdir, MS_BIND | MS_REC)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        point = fields[4].encode().decode("unicode_escape")
        if point == workdir or point.startswith(workdir + "/") or point == "/dev" or point.startswith("/dev/pts"):
            continue
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        for option in fields[5].split(","):
            flags |= kept.get(option, 0)
        try:
            call(None, point, flags)
        except OSError:
            if point == "/":
                raise
    os.chdir(workdir)  # our cwd still points below the bind mount, into the read-only tree


if _cfg["isolate"]:
    try:
        _read_only_except(os.getcwd())
    except Exception as _exc:
        print(f"%(isolation_off)s: {_exc}", file=sys.stderr, flush=True)
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
""" % {"name": SNIPPET_NAME, "memory_exit": MEMORY_EXIT, "isolation_off": FS_ISOLATION_OFF}


@dataclass
class SandboxResult:
    status: Status
    """pass (exit 0), fail (non-zero exit or killed by a signal), timeout (wall clock or CPU limit),
    memory (a MemoryError under the address-space limit), error (the sandbox itself could not run it)."""
    returncode: int | None
    """The child's exit status; negative: killed by that signal; None: it never started."""
    stdout: str
    """At most `OUTPUT_LIMIT` bytes; a longer output keeps its head and tail around a marker."""
    stderr: str
    """As stdout; the tail is what holds a traceback's error line."""
    seconds: float
    """Wall-clock seconds from start to exit (or kill)."""


def run_python(code: str, *, repo_root: Path | None, timeout_s: float = 10, memory_mb: int = 512,
               extra_env: dict | None = None) -> SandboxResult:
    """Run `code` as `__main__` of a fresh, limited Python process and report how it ended.

    Args:
        code: the Python source to run.
        repo_root: a folder put on the child's PYTHONPATH (the repository whose package the code
            imports), or None.
        timeout_s: wall-clock limit; the child's whole process group is killed when it passes.
            CPU time is capped at about this plus one second.
        memory_mb: the child's address-space limit (RLIMIT_AS). Interpreter start-up needs about
            30 MB; importing large native libraries can need several hundred.
        extra_env: variables added to the child's minimal environment (nothing else of this
            process's environment reaches it).

    Raises:
        ValueError: timeout_s or memory_mb is not positive.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s={timeout_s} must be positive (10 is typical)")
    if memory_mb <= 0:
        raise ValueError(f"memory_mb={memory_mb} must be positive (512 is typical)")
    workdir = Path(tempfile.mkdtemp(prefix="doctune-sandbox-"))
    try:
        return _run_in(workdir, code, repo_root, timeout_s, memory_mb, extra_env or {})
    finally:
        _remove_tree(workdir)


def _run_in(workdir: Path, code: str, repo_root: Path | None, timeout_s: float, memory_mb: int,
            extra_env: dict) -> SandboxResult:
    """Write the snippet into workdir, run it there, collect the result, kill what it left behind."""
    (workdir / SNIPPET_NAME).write_text(code, encoding="utf-8")
    root = str(Path(repo_root).resolve()) if repo_root is not None else ""
    settings = {"repo_root": root, "limits": _limits(timeout_s, memory_mb), "isolate": sys.platform == "linux"}
    cmd = [sys.executable, "-s", "-c", _BOOTSTRAP, json.dumps(settings)]
    # output goes to unlinked temporary files, not pipes: a grandchild that keeps a pipe open
    # cannot make us wait, and RLIMIT_FSIZE bounds how much the child can write
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, cwd=workdir, env=_child_env(workdir, root, extra_env),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            return SandboxResult("error", None, "", f"could not start {sys.executable}: {exc}",
                                 time.monotonic() - start)
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # the session's whole group: the child and anything it spawned and left running
            _kill_group(proc.pid)
            proc.wait()
        seconds = time.monotonic() - start
        stdout, stderr = _read_bounded(out), _read_bounded(err)
    return SandboxResult(_status(proc.returncode, timed_out, stderr), proc.returncode, stdout, stderr, seconds)


def _limits(timeout_s: float, memory_mb: int) -> dict[str, tuple[int, int]]:
    """The rlimits the child sets on itself, by `resource` constant name, as (soft, hard)."""
    cpu = int(timeout_s) + 1
    limits = {
        "RLIMIT_AS": (memory_mb * 1024 * 1024,) * 2,
        # soft sends SIGXCPU, hard one second later SIGKILL
        "RLIMIT_CPU": (cpu, cpu + 1),
        "RLIMIT_FSIZE": (FILE_SIZE_LIMIT,) * 2,
        "RLIMIT_NOFILE": (OPEN_FILES_LIMIT,) * 2,
        "RLIMIT_CORE": (0, 0),
    }
    nproc = _user_tasks()
    if nproc is not None:
        limits["RLIMIT_NPROC"] = (nproc + EXTRA_PROCESSES,) * 2
    return limits


def _user_tasks() -> int | None:
    """Threads this user runs now (RLIMIT_NPROC counts them all), or None where the limit is moot or unknowable."""
    uid = os.getuid()
    if uid == 0 or not os.path.isdir("/proc"):
        return None
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as f:
                status = f.read()
        except OSError:
            continue
        uid_line = re.search(r"^Uid:\s+(\d+)", status, re.M)
        threads = re.search(r"^Threads:\s+(\d+)", status, re.M)
        if uid_line and int(uid_line.group(1)) == uid:
            total += int(threads.group(1)) if threads else 1
    return total


def _child_env(workdir: Path, repo_root: str, extra_env: dict) -> dict[str, str]:
    """The child's environment, built from nothing: secrets in ours never reach it."""
    # a fixed PATH (this interpreter's folder first) rather than ours, which may name private tools
    path = os.pathsep.join(dict.fromkeys([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]))
    env = {
        "PATH": path,
        "HOME": str(workdir),
        "TMPDIR": str(workdir),  # the one writable place
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }
    if repo_root:
        env["PYTHONPATH"] = repo_root
    env.update({str(k): str(v) for k, v in extra_env.items()})
    return env


def _kill_group(pgid: int) -> None:
    """SIGKILL a process group; gone already is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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


def _remove_tree(path: Path) -> None:
    """Delete a folder even where the child removed its own write permission."""
    def fix(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix)
    else:
        shutil.rmtree(path, onerror=fix)


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
