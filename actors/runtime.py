"""The Ray runtime: join an existing cluster when told to, else start a local one bound to 127.0.0.1."""

from __future__ import annotations

import logging
import os

NAMESPACE = "doctune"


def init_ray(address: str | None = None, num_cpus: int | None = None, token_auth: bool = False) -> str:
    """Connect this process to Ray and return the cluster's address.

    Args:
        address: a cluster to join (`--ray-address`); falls back to `RAY_ADDRESS`. With neither, a
            local cluster is started on 127.0.0.1 only, and ends with this process.
        num_cpus: CPUs for a local cluster (default: all of this machine's).
        token_auth: the cluster at `address` uses Ray's token authentication (as the local clusters Ray
            starts do); Ray only turns it on by itself when it finds the cluster on its own.
    """
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    common = dict(namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
    if not address or address.split("://")[-1].rsplit(":", 1)[0] in {"127.0.0.1", "localhost"}:
        _loopback_only(ray)
        common["_node_ip_address"] = "127.0.0.1"
    if address:
        if token_auth and not os.environ.get("RAY_AUTH_MODE"):
            from ray._private.authentication.authentication_token_setup import _enable_token_auth

            _enable_token_auth()  # what Ray does for a cluster it discovers: RAY_AUTH_MODE=token, reloaded
        ray.init(address=address, **common)
    else:
        # Ray enables token auth for a new local cluster (good) and warns that it did (noise).
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # "local": always a new cluster; without it Ray may join whatever cluster it last recorded in /tmp/ray
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **common)
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


# ---- a persistent local cluster, for runs that outlive the command (train --detach, the dashboard) ----
CLUSTER_FILE = "ray_cluster.json"


def live_cluster_address(home) -> str | None:
    """The address of the cluster recorded in `home` by `start_local_cluster`, if it still answers."""
    import json
    import socket
    from pathlib import Path

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
    from pathlib import Path

    existing = live_cluster_address(home)
    if existing:
        return existing
    home = Path(home)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    (home / CLUSTER_FILE).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "actors.cluster_daemon", "--home", str(home)]
    if num_cpus:
        cmd += ["--num-cpus", str(num_cpus)]
    with open(home / "logs" / "cluster.log", "ab") as log:
        daemon = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                  cwd=str(Path(__file__).resolve().parents[1]))
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
    from pathlib import Path

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
