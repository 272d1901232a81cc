"""The client API: what the CLI and the dashboard call. No SQL and no model code behind this line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from backend.config import check_project_name, resolve_home
from backend.curate_config import CurateConfig
from backend.eval_config import EvalConfig
from backend.export_config import ExportConfig
from backend.ingest_config import IngestConfig
from backend.run_status import ACTIVE, RunStatus
from backend.synth_config import SynthConfig
from actors import runs
from actors.runtime import init_ray

if TYPE_CHECKING:
    import pyarrow as pa

    from backend.train_config import TrainConfig
    from actors.ingest_run import IngestReport

__all__ = ["ACTIVE", "DocTune", "RunStatus"]


class DocTune:
    """A connection to one DocTune home: joins or starts Ray, then finds or creates its store actor.

    Args:
        home: the home folder (default: `DOCTUNE_HOME`, else `data/runtime`).
        ray_address: a cluster to join (default: `RAY_ADDRESS`, else the home's own cluster, else a local one);
            with its token as `init_ray` finds it.
    """

    def __init__(self, home: str | Path | None = None, ray_address: str | None = None,
                 num_cpus: int | None = None):
        from actors.store_actor import StoreClient

        from actors.runtime import live_cluster_address

        self.home = resolve_home(home)
        # an explicit address, else RAY_ADDRESS, else the cluster this home started, else a local one
        address = ray_address or os.environ.get("RAY_ADDRESS") or live_cluster_address(self.home)
        self.ray_address = init_ray(address, num_cpus=num_cpus, home=self.home)
        self.store = StoreClient(self.home)

    def connected(self) -> bool:
        """Whether this client's store actor is still there (not after a cluster restart or a killed actor)."""
        import ray

        try:
            ray.get_actor(self.store.actor_name)
            return True
        except ValueError:
            return False

    def ingest(self, path: str | Path, project: str, cfg: IngestConfig | None = None,
               on_progress: Callable[[int, int], None] | None = None,
               on_plan: Callable[[int], None] | None = None) -> IngestReport:
        """Ingest a repository folder into `project` (an ingest run on this node), with progress callbacks.

        Raises:
            IngestError: the path does not exist or is not a folder (nothing is written).
            ConfigError: the config has problems (each listed with its fix).
            ValueError: `project` is not a valid name (`backend.config.PROJECT_NAME`).
        """
        from actors.ingest_run import start_ingest_run

        return start_ingest_run(self, Path(path), check_project_name(project), cfg or IngestConfig(),
                                on_progress=on_progress, on_plan=on_plan)

    def stats(self, project: str) -> dict:
        """Raises KeyError when the project does not exist."""
        return self.store.stats(project)

    def projects(self) -> list[dict]:
        return self.store.projects()

    def skipped_files(self, project: str, limit: int = 1000) -> list[dict]:
        """Files ingestion skipped: path, kind, size, reason and the fix-it detail."""
        table = self.store.files(project, "skipped")
        return [{k: r[k] for k in ("path", "kind", "size_bytes", "skip_reason", "skip_detail")}
                for r in table.slice(0, limit).to_pylist()]

    def runs(self, project: str | None = None, limit: int = 100) -> list[dict]:
        """Runs, newest first; a `running` run whose actor is gone (its process was killed) shows as
        `interrupted` — rerunning the same command resumes it."""
        return runs.with_liveness(self.store.runs(project, limit))

    def run(self, run_id: str) -> dict:
        """One run of any kind: kind, project, status (`interrupted` when its process died), config, summary,
        error, times.

        Raises:
            KeyError: no such run.
        """
        row = self.store.run(run_id)
        if row is None:
            raise KeyError(run_id)
        return runs.with_liveness([row])[0]

    # ---- synthesis ---------------------------------------------------------------------------
    def synth(self, project: str, cfg: SynthConfig, *, retry_failed: bool = False, new_run: bool = False,
              dry_run: bool = False, on_progress: Callable[[dict], None] | None = None,
              curate_cfg: CurateConfig | None = None, wait: bool = True) -> dict:
        """Generate samples for `project`'s chunks, resuming an unfinished run of the same config.

        Returns a summary: run id, status, counts, tokens, cost, and the dataset version it curated into.
        With `dry_run`, only the plan and its cost estimate (nothing is sent). Without `wait`, returns once
        the run has started; a detached actor sees it through and curates it (`synth_progress` watches it).

        Raises:
            KeyError: no such project.
            ConfigError: the config has problems (each with its fix).
            ValueError: the project has no chunks, or `retry_failed` finds no run to retry.
        """
        from actors.synth_run import start_synth_run

        return start_synth_run(self, project, cfg, retry_failed=retry_failed, new_run=new_run, dry_run=dry_run,
                               on_progress=on_progress, curate_cfg=curate_cfg, wait=wait)

    def retry_dead_letters(self, run_id: str, wait: bool = False) -> dict:
        """Retry a synthesis run's dead letters under the run's own configuration.

        Raises:
            ValueError: not a synthesis run, or it has no dead letters.
        """
        from backend.synth_config import SynthConfig

        run = self.store.run(run_id)
        if run is None or run["kind"] != "synth":
            raise ValueError(f"no synthesis run '{run_id}' (see `doctune runs`)")
        stored = {k: v for k, v in run["config"].items() if k != "fingerprint"}
        cfg = SynthConfig.from_dict(stored, f"run {run_id}")
        return self.synth(run["project"], cfg, retry_failed=True, wait=wait)

    def synth_progress(self, run_id: str) -> dict:
        """A synthesis run's live figures: units done of planned, samples, failures, requests in the last
        minute, 429s, tokens, cost. Raises KeyError for an unknown run."""
        return self.store.synth_progress(run_id)

    def limiter_timeline(self, run_id: str) -> list[dict]:
        """A synthesis run's rate limiter over time, a point every few seconds: answers per minute (ok, 429, errors),
        stalls, the in-flight cap, requests in flight and the rate it allowed."""
        return self.store.limiter_timeline(run_id)

    def dead_letters(self, project: str | None = None, run_id: str | None = None) -> list[dict]:
        return self.store.dead_letters(project, run_id)

    def datasets(self, project: str) -> list[dict]:
        return self.store.datasets(project)

    def export(self, project: str, cfg: ExportConfig, *, version: str | None = None) -> dict:
        """Write a dataset version (the latest by default) as `cfg` says (Alpaca, ShareGPT, OpenAI messages or
        Parquet files under `cfg.out`); returns the version, the format and the files written.

        Raises:
            ValueError: the project has no dataset version, no version `version`, samples the format cannot
                hold, or a destination that is not a new or empty folder without `force`, a file, a device or under
                /proc (`backend.export.export_dataset`).
            ConfigError: `cfg` has problems (each with its fix).
        """
        from backend.export import export_dataset  # pyarrow: loaded by the commands that write files

        cfg.validate()
        version = version or self.store.latest_dataset(project)
        if version is None:
            raise ValueError(f"project '{project}' has no dataset version; run `doctune synth` first")
        rows = self.store.dataset_rows(project, version)
        if not rows:
            known = ", ".join(d["version"] for d in self.datasets(project))
            raise ValueError(f"no dataset version '{version}' in project '{project}' (versions: {known})")
        paths = export_dataset(cfg.chosen(rows), cfg.format, Path(cfg.out), f"{project}_{version}",
                               system_prompt=cfg.system_prompt, force=cfg.force)
        return {"version": version, "format": cfg.format, "files": [str(p) for p in paths]}

    def dataset_profile(self, project: str, version: str | None = None) -> dict | None:
        """Splits, task mix, judge scores, coverage and curation stats of a version (the latest by default);
        None when the project has no dataset yet."""
        version = version or self.store.latest_dataset(project)
        return self.store.dataset_profile(project, version) if version else None

    def browse_samples(self, project: str, version: str, *, search: str | None = None, task: str | None = None,
                       split: str | None = None, limit: int = 50, offset: int = 0) -> dict:
        """One page of a version's samples matching the filters, with the total number of matches."""
        return self.store.browse_samples(project, version, search=search or None, task=task, split=split,
                                         limit=limit, offset=offset)

    def review_dataset(self, project: str, version: str, *, edits: dict[str, dict] | None = None,
                       rejects: list[str] | None = None, note: str | None = None) -> str:
        """A reviewer's edits and rejections as a new dataset version; `version` stays as it was.

        Raises:
            KeyError: no such version or sample.
            ValueError: nothing to change, or a field that cannot be edited.
        """
        return self.store.derive_dataset(project, version, edits=edits, rejects=rejects, note=note)

    def curate(self, project: str, run_ids: list[str] | None = None, cfg: CurateConfig | None = None, *,
               judge_cfg: SynthConfig | None = None, wait: bool = True) -> dict:
        """Curate synthesis runs' samples into a new dataset version, in a curation run (kind `curate`); returns
        the version as `datasets` lists it, with the curation's `run_id`.

        Args:
            run_ids: the synthesis runs to curate (default: the latest that finished).
            cfg: thresholds and checks (default: `CurateConfig()`).
            judge_cfg: an OpenAI-compatible endpoint to score samples with (needs `cfg.judge_threshold` to drop
                any); its requests are logged under the curation run.
            wait: off: return `{"run_id", "status"}` once the run is started.

        Raises:
            ValueError: no finished synthesis run, or no sample survived curation.
            ConfigError: `cfg` has problems (each with its fix).
        """
        from actors.curate_run import start_curate_run

        run_ids = run_ids or [r["run_id"] for r in self.runs(project) if r["kind"] == "synth"
                              and r["status"] in {RunStatus.COMPLETED, RunStatus.BUDGET_STOPPED}][:1]
        if not run_ids:
            raise ValueError(f"no finished synthesis run in project '{project}'; run `doctune synth` first")
        result = start_curate_run(self, project, run_ids, cfg, judge_cfg, wait=wait)
        if not wait:
            return result
        if result["dataset"] is None:
            raise ValueError(f"no sample of {', '.join(run_ids)} survived curation; loosen the thresholds")
        return next(d for d in self.datasets(project) if d["version"] == result["dataset"]) | {
            "run_id": result["run_id"]}

    # ---- training ----------------------------------------------------------------------------
    def train(self, project: str | None, cfg: TrainConfig | None = None, *, version: str | None = None,
              resume_run: str | None = None, wait: bool = True,
              on_progress: Callable[[dict], None] | None = None) -> dict:
        """Train a LoRA adapter on a dataset version (the latest by default), or resume a run.

        Raises:
            KeyError: no such project.
            ValueError: no usable dataset version, or a run that cannot be resumed.
            ConfigError: the config is invalid or does not fit this cluster (each problem with its fix).
        """
        from actors.train_run import start_train_run

        return start_train_run(self, project, cfg, version=version, resume_run=resume_run, wait=wait,
                               on_progress=on_progress)

    def cancel(self, run_id: str) -> str:
        """Stop a run of any kind (training checkpoints first); a run whose process died is marked cancelled.

        Raises:
            ValueError: no such run.
        """
        return runs.cancel(self.store, run_id)

    def metrics(self, run_id: str, names: list[str] | None = None) -> pa.Table:
        """step, name, value, ts of a run's metrics (all names, or those given), in step order."""
        return self.store.metrics(run_id, names)

    def metric_series(self, run_ids: list[str], names: list[str], x: str = "step",
                      max_points: int = 400) -> pa.Table:
        """Downsampled curves (an Arrow table: run_id, name, x, value, min, max) against step, epoch or
        num_tokens; at most `max_points` points per run and metric, averaged in the store."""
        return self.store.metric_series(run_ids, names, x=x, max_points=max_points)

    def metric_names(self, run_ids: list[str]) -> list[str]:
        return self.store.metric_names(run_ids)

    def run_events(self, run_id: str) -> list[dict]:
        """What happened to a run besides its metrics: queued, started, checkpoint, oom, cancelled, resumed."""
        return self.store.run_events(run_id)

    def compare_runs(self, run_ids: list[str]) -> dict:
        """Training runs side by side: `runs` (status, best eval loss, tokens/s, peak memory, latest
        evaluation) and `config_diff` (each config key whose value differs between them)."""
        rows = self.store.run_table(run_ids)
        flat = {r["run_id"]: _flatten(r["config"]) for r in rows}
        keys = sorted({k for f in flat.values() for k in f})
        diff = {k: {run: f.get(k) for run, f in flat.items()} for k in keys
                if len({repr(f.get(k)) for f in flat.values()}) > 1}
        return {"runs": rows, "config_diff": diff}

    @staticmethod
    def cluster_has_gpu() -> bool:
        """Whether the cluster this client joined has a GPU (training's default preset follows it)."""
        import ray

        return ray.cluster_resources().get("GPU", 0) >= 1

    @staticmethod
    def presets() -> list[str]:
        from backend.train_config import list_presets

        return list_presets()

    def merge(self, run_id: str, out: str | Path | None = None, dtype: str = "bf16", gguf: bool = False) -> dict:
        """The run's adapter merged into its base in 16-bit (and a GGUF file where Unsloth is present), in a
        merge run's actor.

        Raises:
            ValueError: no completed training run with an adapter.
            RuntimeError: GGUF asked for without CUDA and Unsloth.
        """
        from actors.merge_run import start_merge_run

        return start_merge_run(self, run_id, out, dtype, gguf)

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self, adapter_run: str, cfg: EvalConfig | None = None, *,
                 on_progress: Callable[[dict], None] | None = None, wait: bool = True) -> dict:
        """Base against tuned for a completed training run, on its held-out split, the knowledge probes of what
        it trained on, and the retention set; then the pairwise judge when `cfg.judge` is on. Without `wait`,
        returns once the run's actor is started.

        Raises:
            ValueError: not a completed training run, or no samples in the split.
            ConfigError: the config has problems (each with its fix).
        """
        from actors.eval_run import start_eval_run

        return start_eval_run(self, adapter_run, cfg or EvalConfig(), on_progress=on_progress, wait=wait)

    def eval_results(self, eval_run: str, eval_set: str | None = None) -> list[dict]:
        return self.store.eval_results(eval_run, eval_set)

    def eval_learned(self, eval_run: str, examples: int = 3) -> dict:
        """The knowledge probes of an evaluation in plain numbers (`summary`: shares of answers stating the right
        fact, using the repository's real names, inventing one; base and tuned) and up to `examples` answers the
        base got wrong and the tuned model right (`examples`), chosen by score."""
        from backend.evaluate import knowledge_summary, wrong_then_right

        rows = self.store.eval_results(eval_run, "probe")
        return {"summary": knowledge_summary(rows), "examples": wrong_then_right(rows, examples)}

    def identifiers(self, project: str, kind: str | None = None, search: str | None = None,
                    limit: int = 200) -> dict:
        """The repository's names that the grounded metrics look up: `counts` by kind and one page of `rows`
        (name, kind, path, qualified) matching `kind` and `search`."""
        return {"counts": self.store.identifier_counts(project),
                "rows": self.store.identifiers(project, kind, search, limit)}

    @staticmethod
    def models(home: str | Path | None = None) -> list[dict]:
        """The base models this machine has without a download (`backend.base_models.list_models`)."""
        from backend.base_models import list_models

        return list_models(resolve_home(home))

    def eval_view(self, eval_run: str, eval_set: str = "test", *, task: str | None = None, flip: str | None = None,
                  limit: int = 50, offset: int = 0) -> dict:
        """One page of an evaluation's side-by-side rows, filtered by task and by flips of ROUGE-L
        (`improved` / `regressed`), with the judge's win/tie/loss counts for the set."""
        return self.store.eval_view(eval_run, eval_set, task=task, flip=flip, limit=limit, offset=offset)

    def comparison_matrix(self, adapter_runs: list[str], eval_set: str = "test") -> dict:
        """Base and several adapters on one frozen eval set, each metric's mean per model."""
        from actors.eval_run import comparison_matrix

        return comparison_matrix(self, adapter_runs, eval_set)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out
