"""Commands that start things for a home: `cluster`, `dashboard`, and `demo` (the pipeline, then the dashboard)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from backend.auth_config import AUTH_VARIABLE, PASSWORD_VARIABLE, exposed_without_gate
from backend.config import resolve_home
from backend.endpoint_config import hand_over_key
from actors.cli.common import UserError, add_project, cluster_named, connect, emit
from actors.demo import run_demo
from actors.printers import print_cluster
from actors.runtime import home_token, live_cluster_address, ray_temp_dir, start_local_cluster, stop_local_cluster


def add_commands(sub) -> None:
    cl = sub.add_parser("cluster", help="a Ray cluster for this home that outlives commands")
    cl.add_argument("action", choices=["start", "stop", "status"])
    cl.add_argument("--num-cpus", type=int, default=None)
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=cmd_cluster)

    da = sub.add_parser("dashboard", help="the team dashboard (Streamlit) on this home's runs and datasets")
    da.add_argument("--host", default="127.0.0.1",
                    help="address to bind; anything but loopback needs DOCTUNE_DASHBOARD_PASSWORD or "
                         "DOCTUNE_DASHBOARD_AUTH=oidc")
    da.add_argument("--port", type=int, default=8501)
    da.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local cluster it starts")
    da.set_defaults(func=cmd_dashboard)

    de = sub.add_parser("demo", help="run the pipeline on the bundled sample repository")
    add_project(de, default="sample")
    de.add_argument("--no-dashboard", action="store_true", help="stop after printing the summary")
    de.add_argument("--host", default="127.0.0.1", help="the dashboard's address (as for `doctune dashboard`)")
    de.add_argument("--port", type=int, default=8501)
    de.add_argument("--base-url", default=None, help="with a key set: the endpoint to synthesize with "
                                                     "(default DeepSeek)")
    de.add_argument("--model", default=None, help="with a key set: the generator model (default deepseek-chat)")
    de.add_argument("--json", action="store_true")
    de.set_defaults(func=cmd_demo)


def cmd_cluster(args) -> int:
    home = resolve_home(args.home)
    if args.action == "start":
        # where its token is (to join it from elsewhere: --ray-token-file) and Ray's temp folder, said on start
        state = {"address": start_local_cluster(home, args.num_cpus), "running": True,
                 "token_file": str(home_token(home)), "temp_dir": ray_temp_dir(home)}
    elif args.action == "stop":
        state = {"stopped": stop_local_cluster(home), "running": False}
    else:
        address = live_cluster_address(home)
        state = {"address": address, "running": address is not None}
    emit(args, state, print_cluster)
    return 0


def cmd_dashboard(args) -> int:
    """Start (or join) this home's Ray cluster, check the store opens, then hand over to Streamlit."""
    _check_dashboard_host(args.host)
    home = resolve_home(args.home)
    if not cluster_named(args):
        # a cluster of this home's own, so runs outlive the dashboard (`doctune cluster stop` ends it)
        print("starting this home's Ray cluster (runs outlive the dashboard) ...", flush=True)
        start_local_cluster(home, args.num_cpus)
    args.home = str(home)
    connect(args)  # fails here, with its reason, when another process holds the database
    return _serve_dashboard(home, args.host, args.port, args.ray_address)


def cmd_demo(args) -> int:
    """The whole pipeline on the bundled sample repository (actors/demo.py), then the dashboard on its results."""
    started = time.monotonic()
    dashboard = not args.no_dashboard and not args.json
    if dashboard:
        _check_dashboard_host(args.host)
    home = resolve_home(args.home)
    args.home = str(home)
    if dashboard and not cluster_named(args):
        print("starting this home's Ray cluster, which the dashboard will show (`doctune cluster stop` ends it)",
              flush=True)
        start_local_cluster(home)
    results = run_demo(connect(args), args.project, base_url=args.base_url, model=args.model, quiet=args.json)
    if results["eval"] is None:
        return 1  # training did not complete; its summary above says why
    evaluated = results["eval"]["status"] == "completed"
    if args.json:
        print(json.dumps({**results, "seconds": round(time.monotonic() - started, 1)}, indent=2, default=str))
        return 0 if evaluated else 1
    print(f"done in {time.monotonic() - started:.0f} s. Next:\n"
          f"  doctune export --project {args.project} --format alpaca --out ./{args.project}-dataset\n"
          f"  tensorboard --logdir {home / 'runs'}")
    if not evaluated:
        return 1
    if not dashboard:
        print("  doctune dashboard   # everything above, on http://127.0.0.1:8501")
        return 0
    return _serve_dashboard(home, args.host, args.port, args.ray_address)


def _check_dashboard_host(host: str) -> None:
    if exposed_without_gate(host):
        raise UserError(f"--host {host} exposes the dashboard beyond this machine: set {PASSWORD_VARIABLE} "
                        f"(an access password) or {AUTH_VARIABLE}=oidc (Streamlit's OIDC login, configured in "
                        ".streamlit/secrets.toml), or keep the default --host 127.0.0.1")


def _serve_dashboard(home: Path, host: str, port: int, ray_address: str | None) -> int:
    """Replace this process with the Streamlit server (the runs live in the cluster, not here)."""
    # Ray is loaded by then (the client connected); imported here so `doctune --help` does not load it
    import ray

    ray.shutdown()  # the store actor lives in the cluster: the dashboard finds it there
    # the key goes over a pipe, not in the environment that /proc/<pid>/environ shows for the dashboard's life
    env = hand_over_key(dict(os.environ, DOCTUNE_HOME=str(home)))
    if ray_address:  # else RAY_ADDRESS, if set, is already in the environment handed over
        env["RAY_ADDRESS"] = ray_address
    app = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    url = f"http://{host}:{port}"
    print(f"DocTune dashboard: {url}  (home {home}; Ctrl-C stops the dashboard, not the runs)", flush=True)
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", host,
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--global.developmentMode", "false", "--server.fileWatcherType", "none",
           "--client.toolbarMode", "minimal"]
    os.execve(sys.executable, cmd, env)
    return 0  # not reached
