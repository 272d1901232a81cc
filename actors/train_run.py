"""The training run: one actor per run, holding the GPU (`num_gpus=1`) where the cluster has one.

Ray queues a second run until the GPU is free; the store shows it as `queued` until its actor starts.
Metrics leave the training thread through a queue and reach the store actor in batches from a
background thread, so the trainer never waits on the database. The actor is detached and named
`train-<run id>`: it outlives the command that started it, and `doctune cancel` finds it.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from pathlib import Path

import ray

from actors.store_actor import StoreClient


class StoreSink:
    """A `MetricSink` that batches metrics and events to the store actor off the training thread."""

    def __init__(self, store: StoreClient, run_id: str, flush_every_s: float = 1.0):
        self.store, self.run_id = store, run_id
        self.queue: queue.Queue = queue.Queue()
        self.latest: dict[str, float] = {"step": 0}
        self.flush_every_s = flush_every_s
        self.pending: list[ray.ObjectRef] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="metrics-to-store", daemon=True)
        self.thread.start()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.queue.put(("metrics", step, metrics))
        self.latest.update(metrics, step=step)

    def event(self, kind: str, detail: dict) -> None:
        self.queue.put(("event", kind, detail))

    def _loop(self) -> None:
        while not self.closed.is_set():
            self.closed.wait(self.flush_every_s)
            self._flush()

    def _flush(self) -> None:
        rows, events = [], []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item[0] == "metrics":
                _, step, metrics = item
                rows += [(step, name, float(value)) for name, value in metrics.items()
                         if isinstance(value, (int, float)) and value == value]
            else:
                events.append(item[1:])
        if rows:
            self.pending.append(self.store.submit("record_metrics", self.run_id, rows))
        for kind, detail in events:
            self.pending.append(self.store.submit("record_event", self.run_id, kind, detail))
        done, self.pending = ray.wait(self.pending, num_returns=len(self.pending), timeout=0)
        ray.get(done)  # surfaces a failed write

    def close(self) -> None:
        self.closed.set()
        self.thread.join()
        self._flush()
        ray.get(self.pending)


@ray.remote(max_concurrency=4)
class TrainRun:
    """Runs `backend.train.train_adapter` for one run; `cancel` and `progress` answer while it trains."""

    def __init__(self, home: str, run_id: str, project: str, version: str, cfg: dict, resume: bool):
        self.home, self.run_id, self.project, self.version = Path(home), run_id, project, version
        self.cfg_dict, self.resume = cfg, resume
        self.store = StoreClient(self.home)
        self.stop = threading.Event()
        self.sink: StoreSink | None = None
        self.status = "queued"

    def run(self) -> dict:
        import os

        from backend.base_models import resolve_model_path
        from backend.train import train_adapter, use_all_cores
        from backend.train_config import TrainConfig

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, and no usage pings either
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        cfg = TrainConfig.from_dict(self.cfg_dict, "run config")
        self.status = "running"
        self.store.update_run(self.run_id, status="running")
        if self.resume:  # the curve continues from the checkpoint: nothing lost, nothing twice
            from backend.train import checkpoint_history

            history = checkpoint_history(self.home / "runs" / self.run_id)
            if history is not None:
                self.store.rewind_metrics(self.run_id, *history)
        self.sink = StoreSink(self.store, self.run_id)
        self.sink.event("resumed" if self.resume else "started", {"node": ray.get_runtime_context().get_node_id()})
        rows = self.store.dataset_rows(self.project, self.version)
        use_all_cores()
        started = time.monotonic()
        summary: dict = {"dataset": self.version, "preset": cfg.preset}
        status, error = "failed", None
        try:
            base = resolve_model_path(cfg.model.name_or_path, home=self.home)
            result = train_adapter(cfg, [r for r in rows if r["split"] == "train"],
                                   [r for r in rows if r["split"] == "val"], self.home / "runs" / self.run_id,
                                   sink=self.sink, stop=self.stop, resume=self.resume, base_model_path=base,
                                   dataset_version=self.version)
            status = result.status
            summary |= {"global_step": result.global_step, "epochs": round(result.epochs_done, 3),
                        "train_loss": result.train_loss, "eval_loss": result.eval_loss,
                        "adapter": str(result.adapter_dir) if result.adapter_dir else None,
                        "checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
                        "batch_size": result.batch_size, "grad_accum": result.grad_accum,
                        "ooms": sum(e["kind"] == "oom" for e in result.events)}
        except Exception as exc:  # stored on the run; `doctune train --resume` continues from the checkpoint
            error = f"{type(exc).__name__}: {exc}"
            self.sink.event("failed", {"error": error[:2000]})
        finally:
            self.sink.close()
            metrics = self.sink.latest
            summary |= {"tokens_per_second": metrics.get("tokens_per_second"),
                        "peak_gpu_mb": metrics.get("gpu_mem_peak_mb"), "rss_mb": metrics.get("rss_mb"),
                        "seconds": round(time.monotonic() - started, 1)}
            self.status = status
            self.store.finish_run(self.run_id, status, summary, error)
            # a finished run must give its GPU to the next queued one, whether or not anyone waits for it;
            # the result is already on its way to the caller when the timer fires
            handle = ray.get_runtime_context().current_actor
            threading.Timer(1.0, ray.kill, args=(handle,)).start()
        return {"run_id": self.run_id, "status": status, "error": error, **summary}

    def cancel(self) -> None:
        """Stop after the current step, saving a checkpoint first."""
        self.stop.set()

    def progress(self) -> dict:
        latest = dict(self.sink.latest) if self.sink else {}
        return {"status": self.status, "cancelling": self.stop.is_set(), **latest}


def _cluster_has_gpu() -> bool:
    return ray.cluster_resources().get("GPU", 0) >= 1


def check_train_request(client, project: str, version: str | None, cfg) -> tuple[str, list[dict]]:
    """Everything that can be wrong before a run exists: (version, rows) or a clear error.

    Raises:
        KeyError: no such project.
        ValueError: no dataset version, or one without train samples.
        ConfigError: invalid config, a GPU-only preset on a cluster without a GPU, a model not on
            this machine, or a sequence length above the model's.
    """
    from backend.config import ConfigError
    from backend.base_models import resolve_model_path
    from backend.train import _check_model

    store = client.store
    if project not in {p["name"] for p in store.projects()}:
        raise KeyError(project)
    version = version or store.latest_dataset(project)
    if version is None:
        raise ValueError(f"project '{project}' has no dataset version yet; run `doctune synth --project {project}`")
    rows = store.dataset_rows(project, version)
    if not rows:
        known = ", ".join(d["version"] for d in store.datasets(project))
        raise ValueError(f"project '{project}' has no dataset version '{version}' (versions: {known})")
    if not any(r["split"] == "train" for r in rows):
        raise ValueError(f"dataset version {version} has no train samples; curate with a train split")
    cfg.validate()
    if cfg.model.requires_gpu and not _cluster_has_gpu():
        raise ConfigError([f"preset '{cfg.preset}' needs a CUDA GPU and this Ray cluster has none; use "
                           f"`--preset smol` on a CPU, or join a cluster with a GPU (--ray-address)"])
    path = resolve_model_path(cfg.model.name_or_path, home=client.home)
    _check_model(cfg, path)
    return version, rows


def start_train_run(client, project: str | None, cfg=None, *, version: str | None = None,
                    resume_run: str | None = None, wait: bool = True, on_progress=None) -> dict:
    """Create (or resume) a training run, start its actor, and wait for it unless `wait` is off."""
    from backend.train_config import TrainConfig

    store = client.store
    if resume_run:
        run = store.run(resume_run)
        if run is None or run["kind"] != "train":
            raise ValueError(f"no training run '{resume_run}' (see `doctune runs`)")
        if run["status"] == "completed":
            raise ValueError(f"run {resume_run} already completed; start a new one with `doctune train`")
        _ensure_not_running(resume_run)
        project, version = run["project"], run["config"]["dataset"]
        cfg = TrainConfig.from_dict(run["config"]["train"], f"run {resume_run}")
        run_id = resume_run
        store.update_run(run_id, status="queued")
    else:
        version, _ = check_train_request(client, project, version, cfg)
        run_id = f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        store.create_run(run_id, "train", project, {"dataset": version, "preset": cfg.preset,
                                                    "seed": cfg.training.seed, "train": cfg.to_dict()})
        store.update_run(run_id, status="queued")
    resources = {"num_gpus": 1} if _cluster_has_gpu() else {"num_cpus": 1}
    actor = TrainRun.options(name=f"train-{run_id}", lifetime="detached", **resources).remote(
        str(client.home), run_id, project, version, cfg.to_dict(), bool(resume_run))
    done = actor.run.remote()
    if not wait:
        return {"run_id": run_id, "status": "queued", "project": project, "dataset": version, "detached": True}
    while True:
        ready, _ = ray.wait([done], timeout=1.0)
        if on_progress and not ready:
            try:
                on_progress(ray.get(actor.progress.remote(), timeout=5))
            except ray.exceptions.GetTimeoutError:
                pass  # the actor is still queued behind another run
        if ready:
            break
    return ray.get(done)  # the actor ends itself once the run is over


def _ensure_not_running(run_id: str) -> None:
    try:
        actor = ray.get_actor(f"train-{run_id}")
    except ValueError:
        return
    try:
        status = ray.get(actor.progress.remote()).get("status")
    except ray.exceptions.RayActorError:
        return  # it ended between the lookup and the call
    if status in {"queued", "running"}:
        raise ValueError(f"run {run_id} is still {status}; cancel it first (`doctune cancel {run_id}`)")
    ray.kill(actor)


def cancel_run(client, run_id: str) -> str:
    """Ask a run's actor to stop (it checkpoints first); a run whose actor is gone is marked cancelled."""
    run = client.store.run(run_id)
    if run is None:
        raise ValueError(f"no run '{run_id}' (see `doctune runs`)")
    for prefix in ("train", "synth"):
        try:
            actor = ray.get_actor(f"{prefix}-{run_id}")
        except ValueError:
            continue
        ray.get(actor.cancel.remote())
        return "cancelling"
    if run["status"] in {"running", "queued"}:
        client.store.finish_run(run_id, "cancelled", run["summary"], "cancelled while no process ran it")
        return "cancelled"
    return run["status"]
