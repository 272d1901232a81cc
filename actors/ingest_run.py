"""Ingest run: plan in the run's actor (on the caller's node, where the repository is), chunk in parallel Ray
tasks, write through the store actor. The run follows the lifecycle of `actors/runs.py`.

Chunk tables go from each task straight to the store actor as object references, so the run's actor
never copies chunk text. Each batch lands in its own transaction as soon as it is chunked: a crash
keeps every finished batch, and the rerun skips those files because their hashes are stored.

Stopping: `doctune cancel` stops the run after the batches in flight (`cancelled`). Ctrl-C in the command that
watches it stops it the same way, as `interrupted`: ingest has no `--detach`, so Ctrl-C means "stop", also in a
cluster that would keep the run's actor alive after the command. A run whose process is killed (its cluster stopped)
is `interrupted` too, never `failed`. Every case keeps the batches stored; the rerun goes on from there.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ray

from backend.chunk import FileItem, chunk_files, chunker_fingerprint
from backend.ingest_config import ChunkConfig, IngestConfig
from backend.ingest import batch_items, check_root, plan_ingest, skipped_table
from backend.run_status import RunStatus, new_run_id
from actors import runs
from actors.runtime import cluster_cpus
from actors.store_actor import StoreClient


@ray.remote(num_returns=3)
def chunk_batch_task(project: str, items: list[FileItem], cfg: ChunkConfig):
    """One batch on one CPU: (files table, chunks table, counts for progress)."""
    files, chunks = chunk_files(project, items, cfg)
    reasons = [r for r in files.column("skip_reason").to_pylist() if r]
    return files, chunks, {"files": files.num_rows, "chunks": chunks.num_rows, "skipped": reasons,
                           "bytes": sum(i.size for i in items), "node": ray.get_runtime_context().get_node_id()}


def chunk_parallel(project: str, batches: list[list[FileItem]], cfg: ChunkConfig, max_in_flight: int,
                   on_batch: Callable[[ray.ObjectRef, ray.ObjectRef, dict], None],
                   stopped: Callable[[], object] = lambda: None) -> None:
    """Run `chunk_batch_task` over `batches` with at most `max_in_flight` at once, calling `on_batch`
    with (files ref, chunks ref, counts) as each finishes; once `stopped()` is truthy, no batch is started and
    the ones in flight are finished."""
    pending: dict[ray.ObjectRef, tuple[ray.ObjectRef, ray.ObjectRef]] = {}
    queue = list(batches)
    while (queue and not stopped()) or pending:
        while queue and len(pending) < max_in_flight and not stopped():
            files_ref, chunks_ref, counts_ref = chunk_batch_task.remote(project, queue.pop(0), cfg)
            pending[counts_ref] = (files_ref, chunks_ref)
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            files_ref, chunks_ref = pending.pop(ref)
            on_batch(files_ref, chunks_ref, ray.get(ref))


@dataclass
class IngestReport:
    run_id: str
    project: str
    root: str
    git_commit: str | None
    new: int
    changed: int
    unchanged: int
    skipped: dict[str, int]
    gone: int
    ignored: int
    chunks_written: int
    bytes_chunked: int
    seconds: float
    nodes: list[str] = field(default_factory=list)
    status: str = RunStatus.COMPLETED.value

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "nodes"} | {"nodes": len(self.nodes)}


def index_identifiers(store: StoreClient, project: str) -> int:
    """Rebuild the project's identifier index from all its chunks (the repository-grounded metrics use it)."""
    from backend.repo_index import build_index

    chunks = store.chunks(project).select(["path", "kind", "text", "symbol"]).to_pylist()
    return store.replace_identifiers(project, build_index(chunks))


def ingest_repository(store: StoreClient, root: Path, project: str, cfg: IngestConfig, run_id: str,
                      on_progress: Callable[[int, int], None] | None = None,
                      on_plan: Callable[[int], None] | None = None,
                      stopped: Callable[[], RunStatus | None] = lambda: None) -> IngestReport:
    """Ingest `root` into `project` as run `run_id` (created by the caller): new and changed files chunked,
    unchanged skipped, deleted marked gone.

    Args:
        on_plan: called once with the number of files to chunk.
        on_progress: called with (files, bytes) as each batch is stored.
        stopped: the status to end with (`cancelled`, `interrupted`) once asked to stop; None meanwhile.
    """
    started = time.monotonic()
    fingerprint = chunker_fingerprint(cfg.chunk)
    store.update_run(run_id, status=RunStatus.RUNNING)
    plan = plan_ingest(root, cfg, store.file_index(project), fingerprint)
    store.upsert_project(project, str(plan.root), plan.git_commit)
    if on_plan:
        on_plan(len(plan.to_chunk))
    writes: list[ray.ObjectRef] = []
    nodes: set[str] = set()
    totals = {"chunks": 0, "bytes": 0}
    skipped = [s.reason for s in plan.skipped]
    status, error = RunStatus.FAILED, None
    try:
        if plan.skipped:
            writes.append(store.actor.apply_ingest_batch.remote(
                project, skipped_table(project, plan.skipped, plan.git_commit, fingerprint), None))
        workers = cluster_cpus()
        total = sum(i.size for i in plan.to_chunk)
        # enough batches to keep every worker busy to the end, none above the configured size
        batch_bytes = max(32_000, min(cfg.batch_bytes, total // (4 * workers) + 1))

        def stored(files_ref, chunks_ref, counts):
            writes.append(store.actor.apply_ingest_batch.remote(project, files_ref, chunks_ref))
            totals["chunks"] += counts["chunks"]
            totals["bytes"] += counts["bytes"]
            nodes.add(counts["node"])
            skipped.extend(counts["skipped"])
            if on_progress:
                on_progress(counts["files"], counts["bytes"])

        chunk_parallel(project, batch_items(plan.to_chunk, batch_bytes), cfg.chunk, 2 * workers, stored, stopped)
        ray.get(writes)
        status = stopped() or RunStatus.COMPLETED
        if status == RunStatus.COMPLETED:
            store.mark_gone(project, plan.gone)
            if plan.new or plan.changed or plan.gone or not store.identifier_counts(project):
                index_identifiers(store, project)
    except BaseException as exc:
        # the process being stopped (Ctrl-C, its worker shut down) is no failure of the ingest
        stop = isinstance(exc, (KeyboardInterrupt, SystemExit))
        status, error = (RunStatus.INTERRUPTED, None) if stop else (RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        report = IngestReport(
            run_id=run_id, project=project, root=str(plan.root), git_commit=plan.git_commit, new=plan.new,
            changed=plan.changed, unchanged=len(plan.unchanged), skipped=dict(sorted(Counter(skipped).items())), gone=len(plan.gone),
            ignored=plan.ignored, chunks_written=totals["chunks"], bytes_chunked=totals["bytes"],
            seconds=round(time.monotonic() - started, 3), nodes=sorted(nodes), status=status.value)
        try:
            store.finish_run(run_id, status, report.as_dict(), error)
        except Exception:  # the store itself is gone; the original error matters more
            if status == RunStatus.COMPLETED:
                raise
    return report


@ray.remote
class IngestRun:
    """`ingest_repository` as a run: its progress is the files and bytes chunked so far."""

    def __init__(self, home: str, run_id: str, root: str, project: str, cfg: IngestConfig):
        self.store = StoreClient(Path(home))
        self.run_id, self.root, self.project, self.cfg = run_id, Path(root), project, cfg
        self.state = {"status": RunStatus.QUEUED, "planned": None, "files": 0, "bytes": 0}
        self.stop: RunStatus | None = None

    def run(self) -> IngestReport:
        self.state["status"] = RunStatus.RUNNING
        try:
            report = ingest_repository(self.store, self.root, self.project, self.cfg, self.run_id,
                                       on_progress=self._stored, on_plan=self._planned, stopped=lambda: self.stop)
            self.state["status"] = RunStatus(report.status)
            return report
        except BaseException:
            self.state["status"] = RunStatus.FAILED
            raise
        finally:
            runs.end_current_actor()

    def _planned(self, files: int) -> None:
        self.state["planned"] = files

    def _stored(self, files: int, size: int) -> None:
        self.state["files"] += files
        self.state["bytes"] += size

    def progress(self) -> dict:
        return dict(self.state)

    def cancel(self, status: RunStatus = RunStatus.CANCELLED) -> None:
        """Stop after the batches in flight, ending as `status` (`interrupted` when the watching command got
        Ctrl-C); the batches stored stay, and a rerun skips their files."""
        self.stop = status


def start_ingest_run(client, root: Path, project: str, cfg: IngestConfig,
                     on_progress: Callable[[int, int], None] | None = None,
                     on_plan: Callable[[int], None] | None = None) -> IngestReport:
    """Ingest `root` into `project` in a run actor on this node, and wait for its report.

    Raises:
        IngestError: the path does not exist or is not a folder (nothing is written).
        ConfigError: the config has problems (each listed with its fix).
    """
    cfg.validate()
    root = check_root(root).resolve()
    run_id = new_run_id("ingest")
    client.store.create_run(run_id, "ingest", project, {"root": str(root), **cfg.to_dict()})
    handle = runs.launch(IngestRun, run_id, str(client.home), run_id, str(root), project, cfg, here=True)
    seen = {"planned": None, "files": 0, "bytes": 0}

    def relay(state: dict) -> None:  # the actor's running totals, as the callbacks' per-batch increments
        if state["planned"] is not None and seen["planned"] is None and on_plan:
            on_plan(state["planned"])
        if on_progress and state["files"] > seen["files"]:
            on_progress(state["files"] - seen["files"], state["bytes"] - seen["bytes"])
        seen.update({k: state[k] for k in seen})

    try:
        report = runs.watch(handle, relay, poll_s=0.25)
    except KeyboardInterrupt:
        _interrupt(handle)
        raise
    relay({"planned": report.new + report.changed if seen["planned"] is None else seen["planned"],
           "files": max(seen["files"], report.new + report.changed), "bytes": report.bytes_chunked})
    return report


def _interrupt(handle: runs.RunHandle) -> None:
    """Ctrl-C while watching: ask the run to stop as `interrupted` after the batches in flight, and give it a few
    seconds to record that (a second Ctrl-C stops the waiting; the run then shows `interrupted` all the same)."""
    try:
        ray.get(handle.actor.cancel.remote(RunStatus.INTERRUPTED), timeout=5)
        ray.wait([handle.done], timeout=30)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        pass  # it ended already, or cannot answer: its row shows `interrupted` once its actor is gone

