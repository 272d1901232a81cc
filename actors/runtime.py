"""The Ray runtime: join an existing cluster when told to, else start a local one bound to 127.0.0.1."""

from __future__ import annotations

import logging
import os

NAMESPACE = "doctune"


def init_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """Connect this process to Ray and return the cluster's address.

    Args:
        address: a cluster to join (`--ray-address`); falls back to `RAY_ADDRESS`. With neither, a
            local cluster is started on 127.0.0.1 only, and ends with this process.
        num_cpus: CPUs for a local cluster (default: all of this machine's).
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
        ray.init(address=address, **common)
    else:
        # Ray enables token auth for a new local cluster (good) and warns that it did (noise).
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(num_cpus=num_cpus, include_dashboard=False, **common)
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
