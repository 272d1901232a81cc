import os
import time
from pathlib import Path

import pytest

from backend.config import SAMPLE_REPO
from backend import sandbox
from backend.curate_config import CurateConfig
from backend.sandbox import (OUTPUT_LIMIT, WORKDIR, SandboxUnavailable, extract_python_blocks, python_syntax_errors,
                             run_python)


def test_passing_code_captures_stdout():
    r = run_python("print('hello', 6 * 7)", repo_root=None)
    assert (r.status, r.returncode) == ("pass", 0)
    assert r.stdout == "hello 42\n" and r.stderr == ""
    assert 0 < r.seconds < 5


def test_failing_code_reports_exit_status_and_traceback():
    r = run_python("def f():\n    raise ValueError('bad berth')\nf()\n", repo_root=None)
    assert (r.status, r.returncode) == ("fail", 1)
    assert "ValueError: bad berth" in r.stderr
    # the traceback starts in the snippet, not in the sandbox's bootstrap
    assert 'File "snippet.py", line 3' in r.stderr and "<string>" not in r.stderr
    assert run_python("import sys; sys.exit(3)", repo_root=None).returncode == 3
    syntax = run_python("def f(:\n    pass\n", repo_root=None)
    assert syntax.status == "fail" and "SyntaxError" in syntax.stderr


def test_infinite_loop_is_stopped_at_the_timeout():
    start = time.monotonic()
    r = run_python("while True:\n    pass\n", repo_root=None, timeout_s=1)
    assert r.status == "timeout"
    assert r.returncode is not None and r.returncode < 0
    assert time.monotonic() - start < 4


@pytest.mark.parametrize("code", [
    "x = bytearray(2_000_000_000)\n",
    "hog = []\nwhile True:\n    hog.append(bytearray(1_000_000))\n",
])
def test_memory_hog_is_reported_as_memory(code):
    r = run_python(code, repo_root=None, timeout_s=10, memory_mb=256)
    assert r.status == "memory", r
    assert "MemoryError" in r.stderr
    assert r.seconds < 5


def test_child_never_sees_our_secrets(monkeypatch):
    monkeypatch.setenv("DOCTUNE_API_KEY", "sk-secret-123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-456")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-deepseek-789")
    r = run_python("import os\nprint(dict(os.environ))\n", repo_root=SAMPLE_REPO, extra_env={"MODE": "check"})
    assert r.status == "pass"
    for secret in ("sk-secret-123", "sk-openai-456", "sk-deepseek-789", "API_KEY"):
        assert secret not in r.stdout
    env = eval(r.stdout)
    assert set(env) == {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE",
                        "PYTHONHASHSEED", "MODE", "PWD"}  # bwrap's --chdir sets PWD
    assert env["MODE"] == "check" and env["PYTHONHASHSEED"] == "0" and env["PWD"] == WORKDIR
    assert env["PYTHONPATH"] == str(SAMPLE_REPO.resolve())


def test_child_can_write_only_its_own_folder(tmp_path):
    outside = tmp_path / "outside.txt"
    code = (f"import os, tempfile\nopen('inside.txt', 'w').write('ok')\ntempfile.NamedTemporaryFile().write(b'ok')\n"
            f"open(os.devnull, 'w').write('ok')\nprint(open({str(SAMPLE_REPO / 'README.md')!r}).read(9))\n"
            f"try:\n    open({str(SAMPLE_REPO / 'escaped.txt')!r}, 'w')\nexcept OSError as exc:\n    print(exc)\n"
            f"open({str(outside)!r}, 'w').write('escaped')\n")
    r = run_python(code, repo_root=SAMPLE_REPO)
    assert r.status == "fail" and "No such file or directory" in r.stderr, r.stderr  # outside is not there at all
    first, second = r.stdout.splitlines()
    assert first == "# tidemar"  # the repository is readable ...
    assert "Read-only file system" in second  # ... not writable
    assert not outside.exists() and not (SAMPLE_REPO / "escaped.txt").exists()


def test_the_machine_is_out_of_reach(tmp_path):
    """No mount (not even a remount of what bwrap bound read-only), no new namespace, no network, no other process,
    no secret file; a plain fork still works."""
    code = ("import ctypes, os, socket\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print(libc.mount(None, b'/', None, 32 | 4096, None), ctypes.get_errno())\n"
            "print(libc.unshare(0x10000000), ctypes.get_errno())\n"
            "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()) == [1, os.getpid()])\n"
            f"print(os.path.exists('/etc/shadow'), os.path.exists({str(Path.home() / '.ray')!r}))\n"
            "pid = os.fork()\nos._exit(0) if pid == 0 else print(os.waitpid(pid, 0)[1])\n"
            "socket.create_connection(('127.0.0.1', 22), timeout=1)\n")
    r = run_python(code, repo_root=None)
    assert r.stdout.splitlines() == ["-1 1", "-1 1", "True", "False False", "0"], r.stderr  # 1: EPERM
    assert r.status == "fail" and "Connection refused" in r.stderr


def test_seccomp_filter_is_well_formed():
    prog = sandbox.seccomp_filter()
    assert len(prog) % 8 == 0 and len(prog) // 8 == len(sandbox.DENIED_SYSCALLS) + 12
    assert len(set(sandbox.DENIED_SYSCALLS.values())) == len(sandbox.DENIED_SYSCALLS)


def test_missing_bwrap_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.sandbox_problem.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
            run_python("print(1)", repo_root=None)
        with pytest.raises(ValueError, match="exec_check is on, but .*apt-get install bubblewrap"):
            CurateConfig(exec_check=True).validate()
        CurateConfig(exec_check=False).validate()
    finally:
        sandbox.sandbox_problem.cache_clear()


def test_repository_package_is_importable():
    r = run_python("import tidemark\nprint(tidemark.__version__, tidemark.__file__)\n", repo_root=SAMPLE_REPO)
    assert r.status == "pass", r.stderr
    assert r.stdout.startswith("3.4.1 ") and str(SAMPLE_REPO.resolve()) in r.stdout
    # without the repository it is not
    assert run_python("import tidemark\n", repo_root=None).status == "fail"


def test_working_directory_is_temporary_and_removed():
    code = "import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())\nprint(os.environ['HOME'])\n"
    r = run_python(code, repo_root=None)
    cwd, home = r.stdout.split()
    assert cwd == home == WORKDIR  # a tmpfs of the sandbox's own, gone with it
    assert not Path(cwd).exists()


def test_no_bytecode_written_into_the_repository(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("VALUE = 5\n")
    r = run_python("import pkg\nprint(pkg.VALUE)\n", repo_root=tmp_path)
    assert r.stdout == "5\n"
    assert not (tmp_path / "pkg" / "__pycache__").exists()


def test_long_output_is_truncated_to_head_and_tail():
    r = run_python("print('A' * 50_000)\nprint('END')\n", repo_root=None)
    assert r.status == "pass"
    assert len(r.stdout.encode()) <= OUTPUT_LIMIT
    assert r.stdout.startswith("AAAA") and r.stdout.rstrip().endswith("END") and "bytes cut" in r.stdout


def test_file_size_and_open_files_are_limited():
    big = run_python("f = open('big', 'wb')\nf.write(b'0' * (64 * 1024 * 1024))\nf.close()\n", repo_root=None)
    assert big.status == "fail" and "File too large" in big.stderr
    fds = run_python("fs = [open('f%d' % i, 'w') for i in range(200)]\n", repo_root=None)
    assert fds.status == "fail" and "Too many open files" in fds.stderr


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def _sleepers(seconds: str) -> list[int]:
    """Host pids of live `sleep SECONDS` processes (the sandbox's own pids mean nothing out here)."""
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and _cmdline(p) == ["sleep", seconds] and _alive(int(p.name))]


def _cmdline(proc: Path) -> list[str]:
    try:
        return proc.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _gone(seconds: str) -> bool:
    deadline = time.monotonic() + 3
    while _sleepers(seconds) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _sleepers(seconds)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_spawned_processes_die_with_the_run():
    seconds = f"{60 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6}"  # marks this test's sleepers
    code = ("import os, subprocess\n"
            f"ps = [subprocess.Popen(['sleep', {seconds!r}]) for _ in range(4)]\n"
            f"if os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', {seconds!r}])\n"
            "print(len(ps) + 1, flush=True)\n"
            "while True:\n    pass\n")
    r = run_python(code, repo_root=None, timeout_s=1)
    assert r.status == "timeout" and r.stdout.strip() == "5"
    assert _gone(seconds)
    # also a background process left behind by a run that exits normally
    r = run_python(f"import subprocess\nsubprocess.Popen(['sleep', {seconds!r}])\n", repo_root=None)
    assert r.status == "pass"
    assert _gone(seconds)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="timeout_s"):
        run_python("pass", repo_root=None, timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_python("pass", repo_root=None, memory_mb=0)


ANSWER = """Here is how to quote a lane:

```python
from tidemark import default_rate_card
card = default_rate_card()
```

Run it from the shell:

```bash
python quote.py
```

```py
print(card)
```

The output:

```
42
```

```
x = compute(1, 2)
```

```json
{"a": 1}
```

```
{"a": 1}
```

    ```python
    indented = True
    ```
"""


def test_extract_python_blocks():
    blocks = extract_python_blocks(ANSWER)
    assert blocks == [
        "from tidemark import default_rate_card\ncard = default_rate_card()",
        "print(card)",
        "x = compute(1, 2)",
        "indented = True",
    ]
    assert extract_python_blocks("no code here") == []
    # an unclosed fence runs to the end (a truncated answer)
    assert extract_python_blocks("```python\nx = 1\ny = (") == ["x = 1\ny = ("]
    # a longer fence contains a shorter one
    assert extract_python_blocks("````python\ns = '''\n```\n'''\n````\n") == ["s = '''\n```\n'''"]
    # shell commands and bare words in an unlabeled fence are not Python
    assert extract_python_blocks("```\npip install tidemark\n```\n```\nls\n```\n") == []


def test_extract_python_blocks_from_loosely_indented_answers():
    # a fence indented right under a list item's text, closed less indented than it opened
    answer = "1. Run:\n    ```python\n    x = 1\n    if x:\n        y = 2\n```\n2. Done.\n```python\nz = 3\n```\n"
    assert extract_python_blocks(answer) == ["x = 1\nif x:\n    y = 2", "z = 3"]
    # tabs become four columns, so tab and space indentation mixed in one block still parses
    assert extract_python_blocks("```python\nif x:\n    a = 1\n\tb = 2\n```") == ["if x:\n    a = 1\n    b = 2"]
    assert python_syntax_errors("```python\nif x:\n    a = 1\n\tb = 2\n```") == []
    # fences in block quotes are quoted text, not the answer's code
    assert extract_python_blocks("> ```python\n> x = 1\n> ```\n") == []


def test_python_syntax_errors():
    text = "```python\nok = 1\n```\n\n```python\ndef f(:\n    pass\n```\n\n```py\nx = 1\n  y = 2\n```\n"
    errors = python_syntax_errors(text)
    assert len(errors) == 2
    assert errors[0].startswith("block 2 line 1: ")
    assert errors[1].startswith("block 3 line 2: ") and "indent" in errors[1]
    assert python_syntax_errors(ANSWER) == []
    assert python_syntax_errors("plain prose") == []
