"""The training run: one actor per run, holding the GPU (`num_gpus=1`) where the cluster has one.

Ray queues a second run until the GPU is free; the store shows it as `queued` until its actor starts.
Metrics leave the training thread through a queue and reach the store actor in batches from a
background thread, so the trainer never waits on the database. The run follows the one lifecycle of
`actors/runs.py`: a detached actor named after the run, which outlives the command that started it and which
`doctune cancel` finds. A run may continue an earlier run's adapter (`start_train_from`): its own run, on a
newer dataset version, its parent recorded in its config and summary.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import ray

from backend.run_status import RunStatus, new_run_id
from actors import runs
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
            self.pending.append(self.store.actor.record_metrics.remote(self.run_id, rows))
        for kind, detail in events:
            self.pending.append(self.store.actor.record_event.remote(self.run_id, kind, detail))
        done, self.pending = ray.wait(self.pending, num_returns=len(self.pending), timeout=0)
        ray.get(done)  # surfaces a failed write

    def close(self) -> None:
        self.closed.set()
        self.thread.join()
        self._flush()
        ray.get(self.pending)


@ray.remote
class TrainRun:
    """Runs `backend.train.train_adapter` for one run; `cancel` and `progress` answer while it trains."""

    def __init__(self, home: str, run_id: str, project: str, version: str, cfg: dict, resume: bool,
                 parent_run: str | None = None):
        self.home, self.run_id, self.project, self.version = Path(home), run_id, project, version
        self.cfg_dict, self.resume, self.parent_run = cfg, resume, parent_run
        self.store = StoreClient(self.home)
        self.stop = threading.Event()
        self.sink: StoreSink | None = None
        self.status = RunStatus.QUEUED

    def run(self) -> dict:
        import os

        from backend.base_models import resolve_model_path
        from backend.train import train_adapter, use_all_cores
        from backend.train_config import TrainConfig

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, and no usage pings either
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        cfg = TrainConfig.from_dict(self.cfg_dict, "run config")
        self.status = RunStatus.RUNNING
        # "seconds" counts the whole run: the attempts before a resume, as their summaries recorded them
        seconds_before = (self.store.run(self.run_id)["summary"] or {}).get("seconds", 0.0) if self.resume else 0.0
        self.store.update_run(self.run_id, status=RunStatus.RUNNING)
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
        summary: dict = {"dataset": self.version, "preset": cfg.preset, "parent_run": self.parent_run}
        status, error = RunStatus.FAILED, None
        try:
            base = resolve_model_path(cfg.model.name_or_path, home=self.home)
            parent = self.store.run(self.parent_run)["summary"]["adapter"] if self.parent_run else None
            result = train_adapter(cfg, [r for r in rows if r["split"] == "train"],
                                   [r for r in rows if r["split"] == "val"], self.home / "runs" / self.run_id,
                                   sink=self.sink, stop=self.stop, resume=self.resume, base_model_path=base,
                                   dataset_version=self.version, init_adapter=Path(parent) if parent else None)
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
                        "seconds": round(seconds_before + time.monotonic() - started, 1)}
            self.status = status
            self.store.finish_run(self.run_id, status, summary, error)
            runs.end_current_actor()  # its GPU goes to the next queued run
        return {"run_id": self.run_id, "status": status, "error": error, **summary}

    def cancel(self) -> None:
        """Stop after the current step, saving a checkpoint first."""
        self.stop.set()

    def progress(self) -> dict:
        latest = dict(self.sink.latest) if self.sink else {}
        return {"status": self.status, "cancelling": self.stop.is_set(), **latest}


def check_train_request(client, project: str, version: str | None, cfg) -> tuple[str, list[dict]]:
    """Everything that can be wrong before a run exists: (version, rows) or a clear error.

    Raises:
        KeyError: no such project.
        ValueError: no dataset version, or one without train samples.
        ConfigError: invalid config, a GPU-only preset on a cluster without a GPU, a model not on
            this machine, or a sequence length above the model's.
    """
    from backend.base_models import resolve_model_path
    from backend.config_base import ConfigError
    from backend.train import _check_model

    store = client.store
    if project not in {p["name"] for p in store.projects()}:
        raise KeyError(project)
    version = version or store.current_dataset(project)
    if version is None:
        raise ValueError(f"project '{project}' has no dataset version yet; run `doctune synth --project {project}`")
    rows = store.dataset_rows(project, version)
    if not rows:
        known = ", ".join(d["version"] for d in store.datasets(project))
        raise ValueError(f"project '{project}' has no dataset version '{version}' (versions: {known})")
    if not any(r["split"] == "train" for r in rows):
        raise ValueError(f"dataset version {version} has no train samples; curate with a train split")
    cfg.validate()
    if cfg.model.requires_gpu and "num_gpus" not in runs.model_resources():
        raise ConfigError([f"preset '{cfg.preset}' needs a CUDA GPU and this Ray cluster has none; use "
                           f"`--preset smol` on a CPU, or join a cluster with a GPU (--ray-address)"])
    path = resolve_model_path(cfg.model.name_or_path, home=client.home)
    _check_model(cfg, path)
    return version, rows


def start_train_run(client, project: str | None, cfg=None, *, version: str | None = None,
                    resume_run: str | None = None, parent_run: str | None = None, wait: bool = True,
                    on_progress=None) -> dict:
    """Create (or resume) a training run, start its actor, and wait for it unless `wait` is off. A new run with
    `parent_run` starts from that run's adapter (`start_train_from` checks that it can)."""
    from backend.train_config import TrainConfig

    store = client.store
    if resume_run:
        run = store.run(resume_run)
        if run is None or run["kind"] != "train":
            raise ValueError(f"no training run '{resume_run}' (see `doctune runs`)")
        if run["status"] == RunStatus.COMPLETED:
            raise ValueError(f"run {resume_run} already completed; start a new one with `doctune train`")
        runs.ensure_not_running(resume_run)
        project, version = run["project"], run["config"]["dataset"]
        cfg = TrainConfig.from_dict(run["config"]["train"], f"run {resume_run}")
        run_id, parent_run = resume_run, run["config"].get("parent_run")
    else:
        version, _ = check_train_request(client, project, version, cfg)
        run_id = new_run_id("train")
        store.create_run(run_id, "train", project, {"dataset": version, "preset": cfg.preset,
                                                    "seed": cfg.training.seed, "train": cfg.to_dict(),
                                                    "parent_run": parent_run})
    store.update_run(run_id, status=RunStatus.QUEUED)
    handle = runs.launch(TrainRun, run_id, str(client.home), run_id, project, version, cfg.to_dict(),
                         bool(resume_run), parent_run, resources=runs.model_resources(), max_concurrency=4)
    if not wait:
        return {"run_id": run_id, "status": RunStatus.QUEUED.value, "project": project, "dataset": version,
                "parent_run": parent_run, "detached": True}
    return runs.watch(handle, on_progress)


def continue_config(client, parent_run: str, cfg=None):
    """(parent run, config) for a run continuing `parent_run`'s adapter: the parent's own config, or `cfg` when it
    has the parent's base model and LoRA shape.

    Raises:
        ValueError: no such training run, a run not completed or without its adapter on disk, or a `cfg` with
            another base model or LoRA shape (each message says what to do instead).
    """
    from backend.train_config import TrainConfig

    run = client.store.run(parent_run)
    if run is None or run["kind"] != "train":
        raise ValueError(f"no training run '{parent_run}' to continue; pick a completed one from `doctune runs`")
    if run["status"] != RunStatus.COMPLETED:
        raise ValueError(f"run {parent_run} is {run['status']}, not completed: finish it first (`doctune train "
                         f"--resume {parent_run}`) or continue a completed run")
    adapter = (run["summary"] or {}).get("adapter")
    if not adapter or not (Path(adapter) / "adapter_model.safetensors").is_file():
        raise ValueError(f"run {parent_run} has no adapter on disk ({adapter or 'none recorded'}); continue a run "
                         f"whose adapter/ folder is still in its run folder")
    parent_cfg = TrainConfig.from_dict(run["config"]["train"], f"run {parent_run}")
    if cfg is None:
        return run, parent_cfg
    problems = []
    if cfg.model.name_or_path != parent_cfg.model.name_or_path:
        problems.append(f"base model {cfg.model.name_or_path} is not run {parent_run}'s base "
                        f"{parent_cfg.model.name_or_path}")
    if cfg.lora.to_dict() != parent_cfg.lora.to_dict():
        problems.append(f"LoRA settings {cfg.lora.to_dict()} are not run {parent_run}'s {parent_cfg.lora.to_dict()}")
    if problems:
        raise ValueError(f"cannot continue run {parent_run}'s adapter: {'; '.join(problems)}. Drop --preset/--config "
                         f"to use the parent's own settings, or train a fresh adapter without --from")
    return run, cfg


def start_train_from(client, parent_run: str, cfg=None, *, version: str | None = None, wait: bool = True,
                     on_progress=None) -> dict:
    """A new training run that continues `parent_run`'s adapter on `version` (default: the project's current
    dataset version), with the parent's config unless `cfg` is given (same base model and LoRA shape).

    Raises:
        ValueError: the parent cannot be continued (`continue_config`), or the version has no train samples.
        ConfigError: the config does not fit this cluster.
    """
    run, cfg = continue_config(client, parent_run, cfg)
    return start_train_run(client, run["project"], cfg, version=version, parent_run=parent_run, wait=wait,
                           on_progress=on_progress)
