"""Private by default: a home's folders and files are the user's alone, its clusters use the home's own Ray token
and temp folder (not ~/.ray/auth_token or /tmp/ray), and a cluster started elsewhere with token authentication is
joined with the token the user names, or refused with one line that says what to set."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.runtime import SOCKET_PATH_MAX, SOCKET_SUFFIX, ray_temp_dir
from conftest import REPO, run_cli, write_tree

USER_TOKEN = Path.home() / ".ray" / "auth_token"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tiny_repo(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "repo", {"README.md": "# Tiny\n\nSlotting rules apply to every pallet.\n"})


def user_token_state():
    return USER_TOKEN.stat().st_mtime_ns if USER_TOKEN.exists() else None


def test_a_fresh_home_is_private_after_a_command(tmp_path, report):
    home, before = tmp_path / "h", user_token_state()
    out = run_cli("ingest", str(tiny_repo(tmp_path)), "--project", "p", home=home)
    assert out.returncode == 0, out.stderr[-2000:]
    modes = {name: oct(mode(home / name)) for name in ("", "logs", "runs", "ray", "doctune.duckdb", "ray/auth_token")}
    assert modes == {"": "0o700", "logs": "0o700", "runs": "0o700", "ray": "0o700", "doctune.duckdb": "0o600",
                     "ray/auth_token": "0o600"}
    assert len((home / "ray" / "auth_token").read_text()) >= 32
    # the command's own local Ray kept its session in the home's temp folder (or the short private one)
    temp = Path(ray_temp_dir(home))
    assert list(temp.glob("session_2*")) and mode(temp.parent) == 0o700 and temp.parent.stat().st_uid == os.getuid()
    assert user_token_state() == before  # ~/.ray/auth_token neither created nor rewritten
    report(modes=modes, ray_temp_parent=oct(mode(temp.parent)), user_token_touched=False)


def test_a_deep_home_falls_back_to_a_short_private_temp_folder(tmp_path):
    deep = tmp_path / ("d" * 60) / "home"
    temp = Path(ray_temp_dir(deep))
    assert len(str(deep / "ray" / "tmp")) > SOCKET_PATH_MAX - SOCKET_SUFFIX
    assert len(str(temp)) <= SOCKET_PATH_MAX - SOCKET_SUFFIX and str(temp).startswith("/tmp/doctune-")
    assert mode(temp.parent) == 0o700 and temp == Path(ray_temp_dir(deep))  # stable: one folder per home


@pytest.mark.slow
def test_the_home_cluster_uses_the_home_token(tmp_path):
    home, before = tmp_path / "h", user_token_state()
    started = run_cli("cluster", "start", "--json", home=home)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        address = json.loads(started.stdout)["address"]
        token = home / "ray" / "auth_token"
        assert mode(token) == 0o600 and mode(home / "ray_cluster.json") == 0o600
        # a command joins with the home's token, by the recorded address or the same address named
        assert run_cli("ingest", str(tiny_repo(tmp_path)), "--project", "p", home=home).returncode == 0
        named = run_cli("--ray-address", address, "projects", "--json", home=home)
        assert named.returncode == 0 and json.loads(named.stdout)[0]["name"] == "p", named.stderr[-2000:]
        # the store actor holds the database: its holder file is private too
        assert mode(home / "doctune.duckdb") == 0o600 and mode(home / "doctune.duckdb.holder.json") == 0o600
    finally:
        run_cli("cluster", "stop", home=home)
    assert user_token_state() == before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_naming(marker: str) -> list[int]:
    """This user's processes whose command line or environment names `marker`: a `ray start` head's token path,
    which every process of that cluster inherits, workers included."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and proc.stat().st_uid == os.getuid() and \
                    marker.encode() in (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def token_head(tmp_path_factory):
    """A `ray start --head` on 127.0.0.1 with token authentication and a token of its own; stopped by killing the
    processes that name its token file (never `ray stop`, which would end every cluster of the machine)."""
    base = tmp_path_factory.mktemp("head")
    token = base / "token"
    token.write_text("d0c7une" * 6)
    token.chmod(0o600)
    temp = Path(f"/tmp/dth-{os.getpid()}-{int(time.time() * 1000) % 100000}")
    temp.mkdir(mode=0o700)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "PYTHONPATH": str(REPO)}  # its workers run the store actor
    ray = str(Path(sys.executable).parent / "ray")
    try:
        started = subprocess.run([ray, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                                  "--temp-dir", str(temp), "--num-cpus", "1", "--include-dashboard", "false",
                                  "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=120)
        assert started.returncode == 0, started.stderr[-2000:]
        yield f"127.0.0.1:{port}", token
    finally:
        for pid in set(processes_naming(str(token))) - {os.getpid()}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)


def doctune_outside(*args: str, home: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`doctune` with no Ray token setting of this test session (its own Ray sets RAY_AUTH_* here)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    cmd = [str(Path(sys.executable).parent / "doctune"), "--home", str(home), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=clean | (env or {}))


@pytest.mark.slow
def test_joining_a_token_cluster_needs_its_token(tmp_path, token_head):
    address, token = token_head
    home = tmp_path / "h"
    refused = doctune_outside("--ray-address", address, "projects", home=home)
    assert refused.returncode == 2, refused.stderr[-3000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "RAY_AUTH_TOKEN" in lines[0] and "--ray-token-file" in lines[0], lines[-5:]

    joined = doctune_outside("--ray-address", address, "--ray-token-file", str(token), "projects", "--json",
                             home=home)
    assert joined.returncode == 0 and json.loads(joined.stdout) == [], joined.stderr[-3000:]
    by_variable = doctune_outside("--ray-address", address, "projects", home=home,
                                  env={"RAY_AUTH_TOKEN": token.read_text()})
    assert by_variable.returncode == 0, by_variable.stderr[-3000:]
