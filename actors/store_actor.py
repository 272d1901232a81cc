"""The store actor: the one process that owns `doctune.duckdb`, and the typed client everyone calls it through.

The actor is named after its home folder and detached, so every driver in the cluster (CLI,
dashboard, run actors) finds the same one, and it outlives the command that created it. It is
pinned to the node where it was created, because the database file lives on that node's disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from backend.config import DB_FILENAME
from backend.store import Store, StoreLockedError

if TYPE_CHECKING:
    import pyarrow as pa


class StoreActor(Store):
    """The Store itself as an actor: every public `Store` method is a verb of this actor.

    A lock failure is kept and re-raised by `ready()`, so the caller sees its message."""

    def __init__(self, db_path: str, ray_address: str | None, name: str):
        self._error: StoreLockedError | None = None
        try:
            super().__init__(db_path, role=f"DocTune store actor '{name}'", ray_address=ray_address)
        except StoreLockedError as exc:
            self._error = exc

    def ready(self) -> int:
        if self._error is not None:
            raise self._error
        return self.schema_version()

    def shutdown(self) -> None:
        self.close()


def actor_name(home: Path) -> str:
    return "store-" + hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:10]


class StoreClient:
    """Calls the store actor for `home`, creating it when this cluster has none yet.

    Each method below is the `Store` method of the same name (same signature; its code and docstring are in the
    `backend/store/` module the section names), run inside the actor; this process waits for the answer. To
    send without waiting, or with ObjectRefs as arguments, call the actor's verb: `store.actor.NAME.remote(...)`.
    tests/actors/test_store_client.py keeps the two in step.

    Raises:
        StoreLockedError: another process (outside this cluster) owns the database file.
    """

    def __init__(self, home: Path):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.home = home
        self.actor_name = name = actor_name(home)
        here = ray.get_runtime_context().get_node_id()
        self.actor = ray.remote(StoreActor).options(
            name=name, get_if_exists=True, lifetime="detached", num_cpus=0, max_concurrency=1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
        ).remote(str(home / DB_FILENAME), ray.get_runtime_context().gcs_address, name)
        try:
            ray.get(self.actor.ready.remote())
        except StoreLockedError:
            ray.kill(self.actor)  # a named actor without a database must not be found by the next caller
            raise

    @staticmethod
    def _get(ref: ray.ObjectRef) -> Any:
        return ray.get(ref)

    def shutdown(self) -> None:
        """Close the database and end the actor (the next client opens it again)."""
        ray.get(self.actor.shutdown.remote())
        ray.kill(self.actor)

    # ---- core: backend/store/core.py -------------------------------------------------
    def schema_version(self) -> int:
        return self._get(self.actor.schema_version.remote())

    # ---- corpus: backend/store/corpus.py ---------------------------------------------
    def upsert_project(self, name: str, root: str, git_commit: str | None) -> None:
        return self._get(self.actor.upsert_project.remote(name, root, git_commit))

    def projects(self) -> list[dict]:
        return self._get(self.actor.projects.remote())

    def file_index(self, project: str) -> dict[str, tuple[str | None, str | None, str]]:
        return self._get(self.actor.file_index.remote(project))

    def apply_ingest_batch(self, project: str, files: pa.Table, chunks: pa.Table | None) -> int:
        return self._get(self.actor.apply_ingest_batch.remote(project, files, chunks))

    def mark_gone(self, project: str, paths: list[str]) -> int:
        return self._get(self.actor.mark_gone.remote(project, paths))

    def files(self, project: str, status: str | None = None) -> pa.Table:
        return self._get(self.actor.files.remote(project, status))

    def chunks(self, project: str, limit: int | None = None) -> pa.Table:
        return self._get(self.actor.chunks.remote(project, limit))

    def stats(self, project: str) -> dict[str, Any]:
        return self._get(self.actor.stats.remote(project))

    def replace_identifiers(self, project: str, rows: list[dict]) -> int:
        return self._get(self.actor.replace_identifiers.remote(project, rows))

    def identifiers(self, project: str, kind: str | None = None, search: str | None = None,
                    limit: int | None = None) -> list[dict]:
        return self._get(self.actor.identifiers.remote(project, kind, search, limit))

    def identifier_counts(self, project: str) -> dict[str, int]:
        return self._get(self.actor.identifier_counts.remote(project))

    # ---- synthesis: backend/store/synthesis.py ---------------------------------------
    def cached_responses(self, keys: list[str]) -> dict[str, dict]:
        return self._get(self.actor.cached_responses.remote(keys))

    def record_synth_batch(self, run_id: str, responses: list[dict], requests: list[dict], samples: list[dict],
                           dead: list[dict], resolved: list[str]) -> None:
        return self._get(self.actor.record_synth_batch.remote(run_id, responses, requests, samples, dead, resolved))

    def finished_units(self, run_id: str) -> dict[str, str]:
        return self._get(self.actor.finished_units.remote(run_id))

    def run_usage(self, run_id: str) -> dict:
        return self._get(self.actor.run_usage.remote(run_id))

    def synth_progress(self, run_id: str) -> dict[str, Any]:
        return self._get(self.actor.synth_progress.remote(run_id))

    def requests(self, run_id: str) -> list[dict]:
        return self._get(self.actor.requests.remote(run_id))

    def dead_letters(self, project: str | None = None, run_id: str | None = None,
                     unresolved_only: bool = True) -> list[dict]:
        return self._get(self.actor.dead_letters.remote(project, run_id, unresolved_only))

    def resolve_covered_dead_letters(self, run_id: str, by_run: str) -> int:
        return self._get(self.actor.resolve_covered_dead_letters.remote(run_id, by_run))

    def dead_letter_keys(self, run_ids: list[str]) -> list[str]:
        return self._get(self.actor.dead_letter_keys.remote(run_ids))

    def samples(self, run_ids: list[str]) -> list[dict]:
        return self._get(self.actor.samples.remote(run_ids))

    # ---- datasets: backend/store/datasets.py -----------------------------------------
    def record_judgements(self, rows: list[dict]) -> None:
        return self._get(self.actor.record_judgements.remote(rows))

    def judgements(self, sample_ids: list[str], model: str) -> dict[str, float]:
        return self._get(self.actor.judgements.remote(sample_ids, model))

    def create_dataset(self, project: str, rows: list[dict], *, source_runs: list[str], config: dict, stats: dict,
                       parent: str | None = None, note: str | None = None, operation: str = "curation") -> str:
        return self._get(self.actor.create_dataset.remote(project, rows, source_runs=source_runs, config=config,
                                                          stats=stats, parent=parent, note=note, operation=operation))

    def derive_dataset(self, project: str, version: str, *, edits: dict[str, dict] | None = None,
                       rejects: list[str] | None = None, note: str | None = None) -> str:
        return self._get(self.actor.derive_dataset.remote(project, version, edits=edits, rejects=rejects, note=note))

    def datasets(self, project: str) -> list[dict]:
        return self._get(self.actor.datasets.remote(project))

    def latest_dataset(self, project: str) -> str | None:
        return self._get(self.actor.latest_dataset.remote(project))

    def current_dataset(self, project: str) -> str | None:
        return self._get(self.actor.current_dataset.remote(project))

    def set_current_dataset(self, project: str, version: str) -> None:
        return self._get(self.actor.set_current_dataset.remote(project, version))

    def dataset_lineage(self, project: str, version: str) -> dict[str, Any]:
        return self._get(self.actor.dataset_lineage.remote(project, version))

    def dataset_rows(self, project: str, version: str) -> list[dict]:
        return self._get(self.actor.dataset_rows.remote(project, version))

    def dataset_config(self, project: str, version: str) -> dict:
        return self._get(self.actor.dataset_config.remote(project, version))

    def dataset_files(self, project: str, version: str) -> dict[str, str]:
        return self._get(self.actor.dataset_files.remote(project, version))

    def dataset_path_counts(self, project: str, version: str, split: str | None = None) -> dict[str, int]:
        return self._get(self.actor.dataset_path_counts.remote(project, version, split))

    def dataset_profile(self, project: str, version: str) -> dict[str, Any]:
        return self._get(self.actor.dataset_profile.remote(project, version))

    def browse_samples(self, project: str, version: str, *, search: str | None = None, task: str | None = None,
                       split: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        return self._get(self.actor.browse_samples.remote(project, version, search=search, task=task, split=split,
                                                          limit=limit, offset=offset))

    # ---- runs: backend/store/runs.py -------------------------------------------------
    def create_run(self, run_id: str, kind: str, project: str | None, config: dict) -> None:
        return self._get(self.actor.create_run.remote(run_id, kind, project, config))

    def update_run(self, run_id: str, status: str | None = None, summary: dict | None = None) -> None:
        return self._get(self.actor.update_run.remote(run_id, status, summary))

    def set_run_status(self, run_id: str, status: str) -> None:
        return self._get(self.actor.set_run_status.remote(run_id, status))

    def finish_run(self, run_id: str, status: str, summary: dict, error: str | None = None,
                   keep_finished_at: bool = False) -> None:
        return self._get(self.actor.finish_run.remote(run_id, status, summary, error, keep_finished_at))

    def find_run(self, project: str, kind: str, fingerprint: str, unfinished_only: bool = True) -> str | None:
        return self._get(self.actor.find_run.remote(project, kind, fingerprint, unfinished_only))

    def run(self, run_id: str) -> dict | None:
        return self._get(self.actor.run.remote(run_id))

    def runs(self, project: str | None = None, limit: int = 100) -> list[dict]:
        return self._get(self.actor.runs.remote(project, limit))

    def run_table(self, run_ids: list[str]) -> list[dict]:
        return self._get(self.actor.run_table.remote(run_ids))

    def record_metrics(self, run_id: str, rows: list[tuple[int, str, float]]) -> None:
        return self._get(self.actor.record_metrics.remote(run_id, rows))

    def rewind_metrics(self, run_id: str, step: int, history: list[tuple[int, str, float]]) -> int:
        return self._get(self.actor.rewind_metrics.remote(run_id, step, history))

    def metrics(self, run_id: str, names: list[str] | None = None) -> pa.Table:
        return self._get(self.actor.metrics.remote(run_id, names))

    def metric_names(self, run_ids: list[str]) -> list[str]:
        return self._get(self.actor.metric_names.remote(run_ids))

    def latest_metrics(self, run_id: str, names: list[str]) -> dict[str, dict]:
        return self._get(self.actor.latest_metrics.remote(run_id, names))

    def follow_up_runs(self, train_run: str) -> list[dict]:
        return self._get(self.actor.follow_up_runs.remote(train_run))

    def metric_series(self, run_ids: list[str], names: list[str], *, x: str = "step",
                      max_points: int = 400) -> pa.Table:
        return self._get(self.actor.metric_series.remote(run_ids, names, x=x, max_points=max_points))

    def limiter_timeline(self, run_id: str) -> list[dict]:
        return self._get(self.actor.limiter_timeline.remote(run_id))

    def record_event(self, run_id: str, kind: str, detail: dict | None = None) -> None:
        return self._get(self.actor.record_event.remote(run_id, kind, detail))

    def run_events(self, run_id: str) -> list[dict]:
        return self._get(self.actor.run_events.remote(run_id))

    # ---- evaluation: backend/store/evaluation.py -------------------------------------
    def record_eval_results(self, rows: list[dict]) -> None:
        return self._get(self.actor.record_eval_results.remote(rows))

    def set_eval_judgements(self, run_id: str, verdicts: dict[tuple[str, str], tuple[str, dict]]) -> None:
        return self._get(self.actor.set_eval_judgements.remote(run_id, verdicts))

    def eval_results(self, run_id: str, eval_set: str | None = None) -> list[dict]:
        return self._get(self.actor.eval_results.remote(run_id, eval_set))

    def eval_view(self, run_id: str, eval_set: str, *, task: str | None = None, flip: str | None = None,
                  metric: str = "rouge_l", tolerance: float = 0.05, limit: int = 50, offset: int = 0) -> dict:
        return self._get(self.actor.eval_view.remote(run_id, eval_set, task=task, flip=flip, metric=metric,
                                                     tolerance=tolerance, limit=limit, offset=offset))
