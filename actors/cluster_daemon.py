"""Holds a loopback-only Ray cluster open for a DocTune home until it is sent SIGTERM.

Started by `actors.runtime.start_local_cluster`; writes `<home>/ray_cluster.json` (address, pid) once
the cluster answers, and removes it on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path

from actors.runtime import CLUSTER_FILE, init_ray


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", required=True)
    ap.add_argument("--num-cpus", type=int, default=None)
    args = ap.parse_args()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    os.umask(0o077)  # what the cluster writes (Ray's session folder, the database, run folders) is the user's alone
    address = init_ray(None, num_cpus=args.num_cpus, home=args.home)
    record = Path(args.home) / CLUSTER_FILE
    # written last: its presence means the cluster is up
    record.write_text(json.dumps({"address": address, "pid": os.getpid()}))
    try:
        done.wait()
    finally:
        import ray

        ray.shutdown()
        record.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
