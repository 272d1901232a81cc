"""`doctune serve`: training runs' adapters behind an OpenAI-compatible endpoint (Ray Serve); `--stop` ends it,
`--verify RUN` checks that it answers like the evaluation did."""

from __future__ import annotations

import os
import time

from backend.auth_config import is_loopback
from backend.config import resolve_home
from backend.serve import KEY_VARIABLE
from actors.cli.common import UserError, cluster_named, connect, emit
from actors.printers import print_served, print_verified
from actors.runtime import start_local_cluster


def add_commands(sub) -> None:
    se = sub.add_parser("serve", help="serve training runs' adapters (and their base) on an OpenAI-compatible "
                                      "endpoint (Ray Serve)")
    se.add_argument("--run", action="append", default=[], metavar="RUN",
                    help="a completed training run to serve, as model name RUN (repeatable; default: the latest)")
    se.add_argument("--base", default=None, metavar="MODEL",
                    help="serve this base model alone (a name `doctune models` lists, or a folder), as `base`")
    se.add_argument("--host", default="127.0.0.1",
                    help=f"address to listen on; anything but loopback needs {KEY_VARIABLE} (the Bearer key)")
    se.add_argument("--port", type=int, default=8000)
    se.add_argument("--max-batch-size", type=int, default=8, help="requests generated together (Serve's batching)")
    se.add_argument("--detach", action="store_true", help="return at once; the endpoint stays up in this home's "
                                                          "cluster until `doctune serve --stop`")
    se.add_argument("--stop", action="store_true", help="stop the endpoint that is up")
    se.add_argument("--verify", default=None, metavar="RUN",
                    help="replay RUN's latest evaluation through the endpoint serving it; exit 1 on a difference")
    se.add_argument("--limit", type=int, default=None, help="with --verify: only the first N evaluation prompts")
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    key = os.environ.get(KEY_VARIABLE) or None
    if args.stop:
        stopped = connect(args).stop_serving()
        emit(args, {"stopped": stopped}, lambda d: print(f"stopped serving run {stopped}" if stopped
                                                         else "nothing was served"))
        return 0
    if args.verify:
        result = connect(args).verify_serving(args.verify, key=key, limit=args.limit)
        emit(args, result, print_verified)
        return 0 if result["passed"] else 1
    # checked before Ray starts, so the mistake costs no wait
    if not is_loopback(args.host) and not key:
        raise UserError(f"--host {args.host} exposes the endpoint beyond this machine: set {KEY_VARIABLE} (clients "
                        "send it as Authorization: Bearer <key>), or keep the default --host 127.0.0.1")
    if not 1 <= args.port <= 65535 or args.max_batch_size < 1:
        raise UserError("--port must be 1 to 65535 and --max-batch-size at least 1")
    if args.detach and not cluster_named(args):
        start_local_cluster(resolve_home(args.home))  # the endpoint must outlive this command
    client = connect(args)
    train_runs = args.run or ([] if args.base else [_latest_trained(client)])
    result = client.serve(train_runs, base=args.base, host=args.host, port=args.port, key=key,
                          max_batch_size=args.max_batch_size)
    emit(args, {**result, "detached": args.detach}, print_served)
    if args.detach:
        return 0
    try:
        while client.serving():  # until Ctrl-C here, or `doctune serve --stop` elsewhere
            time.sleep(2)
    except KeyboardInterrupt:
        client.stop_serving()
        print("stopped")
    return 0


def _latest_trained(client) -> str:
    for row in client.runs(limit=1000):
        if row["kind"] == "train" and row["status"] == "completed" and row["summary"].get("adapter"):
            return row["run_id"]
    raise UserError("no completed training run to serve: `doctune train --project P` makes one, or serve a base "
                    "model alone with --base MODEL")
