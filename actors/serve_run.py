"""The serving run: training runs' adapters (and their base) behind an OpenAI-compatible endpoint on Ray Serve.

A run of kind `serve` with the common lifecycle (`actors/runs.py`): its actor starts Serve (the HTTP proxy on the
host asked for, 127.0.0.1 by default) and the `backend.serve` application, records the endpoint's URL on the run,
then waits; `doctune serve --stop` (or `doctune cancel RUN`) takes the application down and ends the run, and
`doctune cluster stop` ends it with the cluster (the run then shows `interrupted`). One serving run per cluster:
Serve's proxy is the cluster's.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import ray

from backend.auth_config import is_loopback
from backend.base_models import resolve_model_path
from backend.run_status import RunStatus, new_run_id
from backend.serve import BASE, KEY_VARIABLE, key_digest, replay
from backend.verify import compare
from actors import runs
from actors.store_actor import StoreClient

APP_NAME = "doctune"


@ray.remote
class ServeRun:
    """Serves until cancelled; `progress()` carries the URL once the endpoint answers."""

    def __init__(self, home: str, run_id: str, app_args: dict, host: str, port: int):
        self.store = StoreClient(Path(home))
        self.run_id, self.app_args, self.host, self.port = run_id, app_args, host, port
        self.stop = threading.Event()
        self.state: dict = {"status": RunStatus.QUEUED.value}

    def run(self) -> dict:
        from ray import serve

        from backend.serve import build_app

        self.store.update_run(self.run_id, status=RunStatus.RUNNING)
        self.state["status"] = RunStatus.RUNNING.value
        summary: dict = {"models": [BASE, *self.app_args["adapters"]], "host": self.host, "port": self.port}
        status, error = RunStatus.FAILED, None
        try:
            serve.start(http_options={"host": self.host, "port": self.port})
            serve.run(build_app(**self.app_args), name=APP_NAME, route_prefix="/")
            summary["url"] = f"http://{self.host}:{self.port}/v1"
            summary["started_at"] = time.time()
            self.store.update_run(self.run_id, summary=summary)
            self.state.update(summary)
            self.stop.wait()
            status = RunStatus.COMPLETED  # a server's natural end is being stopped
        except Exception as exc:  # stored on the run
            error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                serve.shutdown()  # the app, its replica and the proxy: the port is free again
            finally:
                self.state["status"] = status.value
                if status != RunStatus.COMPLETED:
                    summary.pop("url", None)  # never served: no URL to show
                self.store.finish_run(self.run_id, status, summary, error)
                runs.end_current_actor()
        return {"run_id": self.run_id, "status": status.value, "error": error, **summary}

    def progress(self) -> dict:
        return dict(self.state)

    def cancel(self) -> None:
        self.stop.set()


def live_serving(client) -> dict | None:
    """The serving run that is up (its row, with `url` and `models` in its summary), or None."""
    for row in runs.with_liveness(client.store.runs(None, 200)):
        if row["kind"] == "serve" and row["status"] == RunStatus.RUNNING.value and row["summary"].get("url"):
            return row
    return None


def adapters_of(client, train_runs: list[str]) -> tuple[str, dict[str, str]]:
    """(the base model's folder, {run id: adapter folder}) of completed training runs sharing one base.

    Raises:
        ValueError: a run that is not a completed training run, or runs trained on different bases.
    """
    adapters, bases = {}, {}
    for run_id in train_runs:
        run = client.store.run(run_id)
        adapter = (run or {}).get("summary", {}).get("adapter")
        if not run or run["kind"] != "train" or run["status"] != RunStatus.COMPLETED.value or not adapter:
            raise ValueError(f"run '{run_id}' has no adapter; serve a completed training run (see `doctune runs`)")
        adapters[run_id] = adapter
        bases[run_id] = str(resolve_model_path(run["config"]["train"]["model"]["name_or_path"], home=client.home))
    if len(set(bases.values())) > 1:
        raise ValueError("one server holds one base model; these runs have different bases: "
                         + ", ".join(f"{r} ({b})" for r, b in bases.items()) + " — serve them separately")
    return next(iter(bases.values())), adapters


def start_serve_run(client, train_runs: list[str], *, base: str | None = None, host: str = "127.0.0.1",
                    port: int = 8000, key: str | None = None, max_batch_size: int = 8,
                    system_prompt: str | None = None, timeout_s: float = 600) -> dict:
    """Serve training runs' adapters (and the base as `base`); returns once the endpoint answers.

    Args:
        train_runs: completed training runs (none: the base alone, `base`).
        base: the base model when no run is given (a name `doctune models` lists, or a folder).
        host, port: where Serve's HTTP proxy listens; a host other than loopback needs `key`.
        key: the key every request must bring (`Authorization: Bearer KEY`); the server keeps only its digest.
        system_prompt: put before conversations without one (a test's way to serve another template).

    Returns:
        {"run_id", "status", "url", "models"} of the serving run.

    Raises:
        ValueError: a bad run or host, a serving run already up, or a server that failed to start (its error).
    """
    if not is_loopback(host) and not key:
        raise ValueError(f"--host {host} exposes the endpoint beyond this machine: set {KEY_VARIABLE} (clients then "
                         "send Authorization: Bearer <key>), or keep the default --host 127.0.0.1")
    live = live_serving(client)
    if live:
        raise ValueError(f"run {live['run_id']} already serves {live['summary']['url']} (one server per cluster): "
                         "stop it with `doctune serve --stop`, then run this again")
    if train_runs:
        base_path, adapters = adapters_of(client, train_runs)
    elif base:
        base_path, adapters = str(resolve_model_path(base, home=client.home)), {}
    else:
        raise ValueError("name what to serve: --run RUN (a completed training run, repeatable) or --base MODEL")
    gpu = runs.model_resources().get("num_gpus")
    app_args = {"base_path": base_path, "adapters": adapters, "digest": key_digest(key) if key else None,
                "max_batch_size": max_batch_size, "system_prompt": system_prompt,
                "ray_actor_options": {"num_gpus": 1} if gpu else {"num_cpus": 1}}
    run_id = new_run_id("serve")
    client.store.create_run(run_id, "serve", _project(client, train_runs),
                            {"runs": train_runs, "base": base_path, "host": host, "port": port,
                             "max_batch_size": max_batch_size, "key": bool(key), "system_prompt": system_prompt})
    client.store.update_run(run_id, status=RunStatus.QUEUED)
    handle = runs.launch(ServeRun, run_id, str(client.home), run_id, app_args, host, port)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _ = ray.wait([handle.done], timeout=1.0)
        if ready:  # it ended before serving: its error
            result = runs.watch(handle)
            raise ValueError(f"serving run {run_id} failed: {result.get('error')}")
        state = ray.get(handle.actor.progress.remote(), timeout=30)
        if state.get("url"):
            return {"run_id": run_id, "status": state["status"], "url": state["url"], "models": state["models"]}
    runs.cancel(client.store, run_id)
    raise ValueError(f"serving run {run_id} did not answer within {timeout_s:.0f} s; see `doctune runs`")


def _project(client, train_runs: list[str]) -> str | None:
    return client.store.run(train_runs[0])["project"] if train_runs else None


def stop_serving(client, timeout_s: float = 60) -> str | None:
    """Stop the serving run that is up and wait for it to end; its id, or None when nothing was served."""
    live = live_serving(client)
    if live is None:
        return None
    runs.cancel(client.store, live["run_id"])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and runs.find_actor(live["run_id"]) is not None:
        time.sleep(0.5)
    return live["run_id"]


def latest_eval(client, train_run: str) -> dict:
    """The latest completed evaluation of a training run.

    Raises:
        ValueError: none yet (the message says how to make one).
    """
    from actors.eval_run import latest_completed_eval

    train = client.store.run(train_run)
    if train is None or train["kind"] != "train":
        raise ValueError(f"no training run '{train_run}' (see `doctune runs`)")
    evaluation = latest_completed_eval(client.store, train_run)
    if evaluation is not None:
        return evaluation
    raise ValueError(f"run {train_run} has no completed evaluation to verify against: `doctune eval --run {train_run}`")


def verify_serving(client, train_run: str, *, key: str | None = None, limit: int | None = None) -> dict:
    """Replay the latest evaluation's prompts of `train_run` through the endpoint that serves it, greedy, with the
    evaluation's max_new_tokens, and compare with the stored tuned answers (`backend.verify.compare`).

    Returns:
        compare's result plus `eval_run` and `url`.

    Raises:
        ValueError: no evaluation, or no endpoint serving the run (the message names the command that starts one).
    """
    evaluation = latest_eval(client, train_run)
    live = live_serving(client)
    if live is None or train_run not in live["summary"].get("models", []):
        raise ValueError(f"no endpoint serves run {train_run}: start one with `doctune serve --run {train_run} "
                         "--detach`, then verify again")
    rows = client.store.eval_results(evaluation["run_id"])[:limit]
    answers = replay(live["summary"]["url"], train_run, rows, key=key,
                     max_tokens=evaluation["config"].get("max_new_tokens", 128))
    return {**compare(rows, answers, side="tuned"), "eval_run": evaluation["run_id"], "url": live["summary"]["url"],
            "run_id": train_run}
