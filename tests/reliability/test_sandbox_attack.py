"""A repository whose doc examples attack the execution check, through `doctune curate --exec-check` on a cluster
that holds a fake API key, and through `run_python` directly (whose output shows what the code got): the code
remounts /, writes outside its folder, reads /proc/*/environ, /etc/shadow, ~/.ray/auth_token and the database,
connects to a loopback listener and to Ray's GCS, forks, setsids and sleeps past the timeout, allocates memory in
several children, forks as much as it can and kills its parent. Nothing is written outside, no secret is read, no
connection is accepted, no process of it outlives its check, and the curation completes with every attack
dropped as `exec_failed`."""

import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from backend.sandbox import limits_in_force, run_python
from conftest import run_cli, write_tree

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is bubblewrap, on Linux")]

KEY_NAME = "DOCTUNE_ATTACK_KEY"
FAKE_KEY = "sk-attack-FAKE-KEY-5150"
INTRO = "This page shows how the helper library is used for the berth planner, step by step, with an example."
TIMEOUT_S = 4
CHILD_MB = 200


def attacks(marker: str, targets: list[str], secrets: list[str], ports: list[int]) -> dict[str, str]:
    """name → the Python of one doc example. Each ends by asserting its attack worked, so a blocked attack fails
    its check; each carries `marker` (a comment, and the command line of what it leaves running)."""
    head = f"# {marker}\nimport os, sys, time\n"
    return {name: head + code for name, code in {
        "remount": f"""import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for flags in (32 | 4096, 32):  # MS_REMOUNT | MS_BIND, MS_REMOUNT
    print("mount", flags, libc.mount(None, b"/", None, flags, None), ctypes.get_errno())
print("unshare", libc.unshare(0x10000000 | 0x20000), ctypes.get_errno())
open({targets[0]!r}, "w").write("escaped")
""",
        "write_outside": f"""wrote = []
for target in {targets!r}:
    try:
        open(target, "w").write("escaped")
        wrote.append(target)
    except OSError as exc:
        print("refused", target, exc)
assert wrote, "nothing written"
""",
        "read_secrets": f"""import glob
blob = b""
for path in sorted(glob.glob("/proc/*/environ")) + {secrets!r}:
    try:
        data = open(path, "rb").read()
    except OSError as exc:
        print("refused", path, type(exc).__name__)
        continue
    print("read", path, data[:4000])
    blob += data
assert {KEY_NAME.encode()!r} in blob, "no key found"
""",
        "connect": f"""import socket
reached = []
for port in {ports!r}:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        reached.append(port)
    except OSError as exc:
        print("refused", port, exc)
assert reached, "no connection"
""",
        "orphans": f"""for _ in range(3):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {marker!r}])
        os._exit(0)
time.sleep(600)
""",
        "memory": f"""kids = []
for i in range(6):
    pid = os.fork()
    if pid == 0:
        block = b"x" * ({CHILD_MB} << 20)
        print("child holds {CHILD_MB} MB", flush=True)
        time.sleep(2)
        os._exit(0)
    kids.append(pid)
codes = [os.waitpid(pid, 0)[1] for pid in kids]
assert all(code == 0 for code in codes), codes
""",
        "fork_many": """forked = 0
for _ in range(400):
    try:
        pid = os.fork()
    except OSError as exc:
        print("fork refused:", exc)
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    forked += 1
print("forked", forked, flush=True)
assert forked == 400
""",
        "kill_parent": """import signal
for pid in (os.getppid(), 1):
    try:
        os.kill(pid, signal.SIGKILL)
        print("killed", pid)
    except OSError as exc:
        print("refused", pid, exc)
os.kill(-1, signal.SIGKILL)
time.sleep(1)
raise SystemExit("the parent survived")
""",
    }.items()}


class Listener:
    """A loopback TCP listener that counts the connections it accepts."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port, self.accepted, self.stop = self.sock.getsockname()[1], 0, threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except TimeoutError:
                continue

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def processes_with(marker: str) -> list[int]:
    """Live processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes() and \
                    "\nState:\tZ" not in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def ok(out) -> str:
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_document_code_cannot_escape_the_execution_check(tmp_path, monkeypatch, report):
    marker = f"doctune-attack-{uuid.uuid4().hex[:10]}"
    home, repo = tmp_path / "home", tmp_path / "repo"
    outside = tmp_path / "outside"  # (tmp_path itself is in the sandbox: a tmpfs folder above the repository)
    outside.mkdir()
    targets = [str(home / "escaped.txt"), str(home / "doctune.duckdb-escaped"), str(repo / "escaped.txt"),
               str(outside / "escaped.txt")]
    ray_token = Path.home() / ".ray" / "auth_token"
    secrets = ["/etc/shadow", str(ray_token), str(home / "doctune.duckdb")]
    secret_values = [FAKE_KEY.encode()] + [Path(p).read_bytes().strip()[:40] for p in secrets[:2]
                                           if Path(p).is_file() and Path(p).read_bytes().strip()]
    env = {KEY_NAME: FAKE_KEY}
    monkeypatch.setenv(KEY_NAME, FAKE_KEY)  # in this process too, for the direct runs
    listener = Listener()
    try:
        gcs = json.loads(ok(run_cli("cluster", "start", "--json", home=home, env=env)))["address"]
        code = attacks(marker, targets, secrets, [listener.port, int(gcs.rsplit(":", 1)[1])])
        write_tree(repo, {f"docs/{name}.md": f"# {name}\n\n{INTRO}\n\n```python\n{src}\n```\n"
                          for name, src in code.items()})
        write_tree(repo, {"docs/fine.md": f"# Fine\n\n{INTRO}\n\n```python\nprint(sum(range(10)))\n```\n",
                          "synth.yaml": "task_mix: {codegen: 1.0}\ntasks_per_chunk: 1\nmin_chunk_tokens: 1\n",
                          "curate.yaml": f"curate:\n  exec_check: true\n  exec_timeout_s: {TIMEOUT_S}\n"})
        ok(run_cli("ingest", str(repo), "--project", "attack", home=home, env=env))
        ok(run_cli("synth", "--project", "attack", "--config", str(repo / "synth.yaml"), home=home, env=env))
        started = time.monotonic()
        checked = json.loads(ok(run_cli("curate", "--project", "attack", "--config", str(repo / "curate.yaml"),
                                        "--json", home=home, env=env)))
        check_s = time.monotonic() - started
        left_by_curation = processes_with(marker)
        exported = tmp_path / "export"
        ok(run_cli("export", "--project", "attack", "--format", "alpaca", "--out", str(exported), home=home))
    finally:
        run_cli("cluster", "stop", home=home)

    # the same code run directly, where its output shows what it got
    direct = {name: run_python(src, repo_root=repo, timeout_s=TIMEOUT_S) for name, src in code.items()}
    time.sleep(0.5)
    left_by_direct = processes_with(marker)
    listener.close()

    output = b"".join((r.stdout + r.stderr).encode() for r in direct.values())
    stored = (home / "doctune.duckdb").read_bytes() + b"".join(p.read_bytes() for p in exported.rglob("*")
                                                              if p.is_file())
    secrets_read = sum(1 for s in secret_values if s in output or s in stored)
    escaped = [t for t in targets if Path(t).exists()] + [str(p) for p in tmp_path.rglob("escaped*")]
    by_status = checked["stats"]["exec_failed_by_status"]
    held_mb = CHILD_MB * direct["memory"].stdout.count(f"child holds {CHILD_MB} MB")
    forks = re.search(r"forked (\d+)", direct["fork_many"].stdout)
    limits = limits_in_force()
    report(attacks=len(code), direct_statuses={n: r.status for n, r in direct.items()},
           curation_exec_failed_by_status=by_status, files_written_outside=len(set(escaped)),
           secrets_read=secrets_read, secret_values_checked=len(secret_values),
           connections_accepted=listener.accepted, processes_left=len(left_by_curation) + len(left_by_direct),
           memory_held_mb_at_once=held_mb, forks_before_refused=int(forks.group(1)) if forks else None,
           curate_exec_check_s=round(check_s, 1), limits=limits)

    assert escaped == []
    assert secrets_read == 0 and b"refused /etc/shadow" in output
    assert listener.accepted == 0
    assert left_by_curation == [] and left_by_direct == []
    assert all(r.status in ("fail", "timeout", "memory") for r in direct.values()), direct
    assert direct["orphans"].status == "timeout"
    # the curation completed, every attack dropped with its status, the harmless example kept
    assert sum(by_status.values()) == len(code) == checked["stats"]["dropped_by_reason"]["exec_failed"]
    assert by_status.get("timeout", 0) >= 1
    rows = [line for p in exported.glob("*.json*") for line in p.read_text().splitlines()]
    assert marker not in "".join(rows) and "sum(range(10))" in "".join(rows)
    if "cgroup" in limits["memory"]:
        assert held_mb <= 512
    if not limits["processes"].startswith("timeout"):
        assert forks is not None and int(forks.group(1)) < 400
