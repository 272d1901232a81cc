"""One lifecycle for every kind of run: create its row → launch a detached actor → watch → it ends itself.

Ingest, synthesis, curation (with its judge), training, evaluation (with its pairwise judge) and merge all
run the same way, so a run started by one command (or a dashboard page) outlives it, and any later command
or page can watch it, cancel it, or see that its process died. Every run actor has the same verbs:

    run() -> dict        does the work, finishes the run's row (status, summary, error), returns the summary,
                         then ends its own actor (a finished run must free its GPU whether anyone waits or not)
    progress() -> dict   live figures, at least {"status": ...}
    cancel() -> None     stop at the next safe point (training checkpoints first)

The actor is named after the run (`actor_name`), detached, so a run is alive exactly while its actor is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from backend.run_status import ACTIVE, RunStatus


def actor_name(run_id: str) -> str:
    return f"run:{run_id}"


class RunBusy(ValueError):
    """A run is still live where another would start: the same run resumed twice (a second `doctune synth` of the
    same settings, a second `train --resume`). The message names it and how to watch or stop it."""

    def __init__(self, run_id: str, status: str):
        self.run_id = run_id
        super().__init__(f"run {run_id} is still {status}: it holds this work; watch it with `doctune runs`, stop it "
                         f"with `doctune cancel {run_id}`, or wait for it to end, then run this again")


@dataclass
class RunHandle:
    """A launched run: its actor and the reference its `run()` result arrives on."""

    run_id: str
    actor: ray.actor.ActorHandle
    done: ray.ObjectRef


def model_resources() -> dict:
    """What a run that loads a model asks for: the GPU where the cluster has one (so runs queue for it), else a
    CPU."""
    return {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {"num_cpus": 1}


def launch(actor_cls, run_id: str, *args, resources: dict | None = None, max_concurrency: int | None = None,
           here: bool = False, **kwargs) -> RunHandle:
    """Start `actor_cls(*args, **kwargs)` as the run's detached actor and call its `run()`.

    Args:
        resources: Ray resources of the actor (default none: an orchestrator whose tasks hold the CPUs).
        max_concurrency: calls served at once; at least 2, so `progress` and `cancel` answer during `run`.
        here: pin the actor to this node (ingest reads the repository from this machine's disk).

    Raises:
        RunBusy: the run's actor already exists (another command started it a moment ago).
    """
    options = dict(name=actor_name(run_id), lifetime="detached", max_concurrency=max(2, max_concurrency or 2),
                   **(resources if resources is not None else {"num_cpus": 0}))
    if here:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False)
    try:
        actor = actor_cls.options(**options).remote(*args, **kwargs)
    except ray.exceptions.ActorAlreadyExistsError:
        raise RunBusy(run_id, "running") from None
    return RunHandle(run_id, actor, actor.run.remote())


def watch(handle: RunHandle, on_progress: Callable[[dict], None] | None = None, poll_s: float = 1.0) -> dict:
    """Wait for the run's result, passing its progress to `on_progress` every `poll_s` seconds.

    Raises:
        Exception: what the run's actor raised, as itself (a ConfigError stays a ConfigError), not wrapped.
    """
    while True:
        ready, _ = ray.wait([handle.done], timeout=poll_s)
        if ready:
            break
        if on_progress:
            try:
                on_progress(ray.get(handle.actor.progress.remote(), timeout=5))
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
                pass  # queued behind another run for its resources, or ending
    try:
        return ray.get(handle.done)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, Exception):
            raise exc.cause from None
        raise


def end_current_actor(delay_s: float = 1.0) -> None:
    """End the calling run actor shortly after it returns (its result is already on its way)."""
    threading.Timer(delay_s, ray.kill, args=(ray.get_runtime_context().current_actor,)).start()


@contextmanager
def recorded(store, run_id: str, summary: dict) -> Iterator[dict]:
    """The body of a short run's `run()`: the row goes `running`, then ends `completed` with `summary` (which the
    body fills in), or `failed` with the error, which is raised on to the caller; then the actor ends."""
    store.update_run(run_id, status=RunStatus.RUNNING)
    status, error = RunStatus.FAILED, None
    try:
        yield summary
        status = RunStatus.COMPLETED
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        store.finish_run(run_id, status, summary, error)
        end_current_actor()


def find_actor(run_id: str):
    """The run's actor, or None when no process works on it."""
    try:
        return ray.get_actor(actor_name(run_id))
    except ValueError:
        return None


def ensure_not_running(run_id: str) -> None:
    """Before a run is resumed: refuse while its actor still works on it, remove one that has finished.

    Raises:
        RunBusy: the run is still queued or running, or its actor does not answer (busy starting, or stuck: a live
            run is never killed to make room for another).
    """
    actor = find_actor(run_id)
    if actor is None:
        return
    try:
        status = ray.get(actor.progress.remote(), timeout=10).get("status")
    except ray.exceptions.RayActorError:
        status = None  # it ended between the lookup and the call
    except ray.exceptions.GetTimeoutError:
        raise RunBusy(run_id, "busy (its actor did not answer within 10 s)") from None
    if status in ACTIVE:
        raise RunBusy(run_id, status)
    ray.kill(actor)


def with_liveness(rows: list[dict]) -> list[dict]:
    """Runs as stored, except that a queued or running run whose actor is gone shows as `interrupted`."""
    for row in rows:
        if row["status"] in ACTIVE and find_actor(row["run_id"]) is None:
            row["status"] = RunStatus.INTERRUPTED.value
    return rows


def cancel(store, run_id: str) -> str:
    """Ask a run's actor to stop; a run whose actor is gone is marked cancelled. Returns what happened.

    Raises:
        ValueError: no such run.
    """
    run = store.run(run_id)
    if run is None:
        raise ValueError(f"no run '{run_id}' (see `doctune runs`)")
    actor = find_actor(run_id)
    if actor is not None:
        ray.get(actor.cancel.remote())
        return "cancelling"
    if run["status"] in ACTIVE:
        store.finish_run(run_id, RunStatus.CANCELLED, run["summary"], "cancelled while no process ran it")
        return RunStatus.CANCELLED.value
    return run["status"]
