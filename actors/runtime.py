"""The Ray runtime: join an existing cluster when told to, else start a local one bound to 127.0.0.1.

Private by default: a cluster this home starts uses the home's own token (`<home>/ray/auth_token`, 0600) and
temp folder (under `<home>/ray`, 0700) — never the user-wide `~/.ray/auth_token` or the shared /tmp/ray — and
no process of it (daemon, GCS, raylet, workers) has the API key in its environment.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import tempfile
from contextlib import contextmanager
from pathlib import Path

from backend.config import private_dir, resolve_home
from backend.endpoint_config import KEY_VARIABLES

NAMESPACE = "doctune"
TOKEN_FILE_VARIABLE = "DOCTUNE_RAY_TOKEN_FILE"
# Ray's sockets live at <temp>/session_<date>_<pid>/sockets/plasma_store.N: about 70 bytes below the temp
# folder, and Linux refuses a Unix socket path over 107 bytes
SOCKET_PATH_MAX, SOCKET_SUFFIX = 107, 70


class RayTokenError(RuntimeError):
    """The cluster to join wants a token this command was not given; the message says what to set."""


def init_ray(address: str | None = None, num_cpus: int | None = None, home: str | Path | None = None) -> str:
    """Connect this process to Ray and return the cluster's address.

    Args:
        address: a cluster to join (`--ray-address`); falls back to `RAY_ADDRESS`. With neither, a
            local cluster is started on 127.0.0.1 only, and ends with this process.
        num_cpus: CPUs for a local cluster (default: all of this machine's).
        home: the DocTune home (default: `resolve_home()`). A local cluster uses its token and temp folder; the
            cluster it records (`start_local_cluster`) is joined with its token; any other cluster with the
            token the user names (`RAY_AUTH_TOKEN`, or the file in `DOCTUNE_RAY_TOKEN_FILE`), or none.

    Raises:
        RayTokenError: the cluster at `address` refused this process for want of its token.
    """
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    home = resolve_home(home)
    address = address or os.environ.get("RAY_ADDRESS")
    common = dict(namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
    if not address or address.split("://")[-1].rsplit(":", 1)[0] in {"127.0.0.1", "localhost"}:
        _loopback_only(ray)
        common["_node_ip_address"] = "127.0.0.1"
    if not address:
        _use_token_file(home_token(home))
        # "local": always a new cluster; without it Ray may join whatever cluster it last recorded in /tmp/ray
        with keys_hidden():  # the GCS, the raylet and every worker start from this environment
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=ray_temp_dir(home),
                     **common)
    else:
        _choose_token(address, home)
        # Ray's C++ client writes a warning to fd 2 for each refused retry (about 20 for a missing token): held back
        # while joining, dropped when the refusal is the token's (one line says it all), passed on otherwise
        with tempfile.TemporaryFile() as held:
            try:
                with _fd2_to(held):
                    ray.init(address=address, **common)
            except Exception as exc:  # Ray raises AuthenticationError, or a ConnectionError that quotes it
                if _refused_for_token(exc):
                    raise RayTokenError(_token_hint(address)) from None  # not Ray's 60 lines about ~/.ray
                _pass_on(held)
                raise
            _pass_on(held)
    return ray.get_runtime_context().gcs_address


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _loopback_only(ray) -> None:
    """Keep a single-machine cluster on 127.0.0.1.

    Ray otherwise rewrites 127.0.0.1 to this machine's external IP ("so other nodes can reach it")
    and then cannot reach its own loopback-bound GCS. Its switch for that, read at import time, is
    this environment variable: set it for the processes Ray starts, and on the loaded module for
    this one.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False


@contextmanager
def keys_hidden():
    """Without the API key variables in this process's environment for the block, e.g. while Ray starts the
    processes of a local cluster. The key reaches the run actors in memory, as a `Secret`."""
    hidden = {name: os.environ.pop(name) for name in KEY_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(hidden)


def home_token(home: Path) -> Path:
    """The home's Ray token file (`<home>/ray/auth_token`, 0600), created on first use."""
    path = private_dir(home / "ray") / "auth_token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def ray_temp_dir(home: Path) -> str:
    """Ray's temp folder for the home's clusters: `<home>/ray/tmp`, or, when that path leaves too little room for
    Ray's socket paths, `/tmp/doctune-<uid>/<hash of home>`. Ray makes the folder itself world-writable; its
    parent (0700) keeps other users out."""
    preferred = home / "ray" / "tmp"
    if len(str(preferred)) <= SOCKET_PATH_MAX - SOCKET_SUFFIX:
        private_dir(home / "ray")
        return str(preferred)
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    short = private_dir(Path("/tmp") / f"doctune-{os.getuid()}") / digest
    logging.getLogger("doctune").warning(
        "%s is too long for Ray's socket paths: Ray's temp folder for this home is %s (private, 0700)", preferred, short)
    return str(short)


def _use_token_file(path: Path) -> None:
    """Token authentication with the token in `path`, for this process and the Ray processes it starts; a token
    variable meant for another cluster is dropped (the path, not the token, is what the environment carries)."""
    from ray._private.authentication.authentication_token_setup import _enable_token_auth
    from ray._raylet import AuthenticationTokenLoader

    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    _enable_token_auth()  # RAY_AUTH_MODE=token, Ray's config reloaded
    AuthenticationTokenLoader.instance().reset_cache()


def _choose_token(address: str, home: Path) -> None:
    """The home's own cluster: its token. Another: the token file the user names, else `RAY_AUTH_TOKEN`, else
    whatever `RAY_AUTH_MODE` says (Ray's default: none)."""
    named = os.environ.get(TOKEN_FILE_VARIABLE)
    if _same_address(address, live_cluster_address(home)):
        _use_token_file(home_token(home))
    elif named:
        if not Path(named).expanduser().is_file():
            raise RayTokenError(f"{TOKEN_FILE_VARIABLE} / --ray-token-file names {named}, which is not a file")
        _use_token_file(Path(named).expanduser().resolve())
    elif os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_MODE"):
        from ray._private.authentication.authentication_token_setup import _enable_token_auth

        _enable_token_auth()


def _same_address(a: str, b: str | None) -> bool:
    def norm(x: str) -> str:
        return x.split("://")[-1].replace("localhost", "127.0.0.1")

    return b is not None and norm(a) == norm(b)


@contextmanager
def _fd2_to(file):
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _pass_on(held) -> None:
    import sys

    held.seek(0)
    sys.stderr.write(held.read().decode(errors="replace"))


def _refused_for_token(exc: BaseException | None) -> bool:
    """Whether Ray refused for want of the token: its AuthenticationError, raised, or quoted in the text of the
    connection error it raises instead."""
    from ray.exceptions import AuthenticationError

    while exc is not None:
        if isinstance(exc, AuthenticationError) or "AuthenticationError" in str(exc) or "InvalidAuthToken" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _token_hint(address: str) -> str:
    return (f"the Ray cluster at {address} wants its token: set RAY_AUTH_TOKEN, or name the file holding it with "
            f"--ray-token-file FILE (env {TOKEN_FILE_VARIABLE}), e.g. a copy of the head's <home>/ray/auth_token "
            "or ~/.ray/auth_token")


# ---- a persistent local cluster, for runs that outlive the command (train --detach, the dashboard) ----
CLUSTER_FILE = "ray_cluster.json"


def live_cluster_address(home) -> str | None:
    """The address of the cluster recorded in `home` by `start_local_cluster`, if it still answers."""
    import json
    import socket

    try:
        address = json.loads((Path(home) / CLUSTER_FILE).read_text())["address"]
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=0.5):
            return address
    except (OSError, ValueError, KeyError):
        return None


def start_local_cluster(home, num_cpus: int | None = None, timeout_s: float = 90) -> str:
    """Start a loopback-only Ray cluster that outlives this process, record it in `home`, return its address.

    The cluster belongs to a small daemon (`python -m actors.cluster_daemon`): it dies with that daemon,
    so `stop_local_cluster` ends exactly this cluster and no other. Every later command with this home
    joins it, so a run started by one command can be watched, cancelled and resumed by the next.
    """
    import subprocess
    import sys
    import time

    existing = live_cluster_address(home)
    if existing:
        return existing
    home = resolve_home(home)
    (home / CLUSTER_FILE).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "actors.cluster_daemon", "--home", str(home)]
    if num_cpus:
        cmd += ["--num-cpus", str(num_cpus)]
    # secrets only where they are used: no API key (runs get it as a `Secret`) and no token meant for another
    # cluster (the daemon uses the home's token file) in the environment every Ray process of the cluster inherits
    env = {k: v for k, v in os.environ.items() if k not in {*KEY_VARIABLES, "RAY_AUTH_TOKEN"}}
    with open(home / "logs" / "cluster.log", "ab") as log:
        daemon = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                  cwd=str(Path(__file__).resolve().parents[1]), env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        address = live_cluster_address(home)
        if address:
            return address
        if daemon.poll() is not None:
            raise RuntimeError(f"the cluster daemon exited ({daemon.returncode}); see {home / 'logs' / 'cluster.log'}")
        time.sleep(0.2)
    daemon.kill()
    raise RuntimeError(f"the cluster did not start within {timeout_s}s; see {home / 'logs' / 'cluster.log'}")


def stop_local_cluster(home, timeout_s: float = 30) -> bool:
    """Stop the cluster recorded in `home` (and every run on it); False when there was none."""
    import json
    import signal
    import time

    path = Path(home) / CLUSTER_FILE
    try:
        pid = json.loads(path.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and path.exists():
        time.sleep(0.1)
    path.unlink(missing_ok=True)
    return True
