"""The client API: what the CLI and the dashboard call. No SQL and no model code behind this line."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from backend.config import check_project_name, resolve_home
from backend.config_base import ConfigError
from backend.curate_config import CurateConfig
from backend.endpoint_config import EndpointConfig
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

    def refresh(self, project: str, cfg: SynthConfig | None = None, *, dry_run: bool = False,
                on_progress: Callable[[dict], None] | None = None) -> dict:
        """Bring the current dataset version up to the repository on disk: re-ingest, synthesize only for new or
        changed text, retire the samples of changed or deleted text, curate a new version (operation `refresh`).
        `cfg` defaults to the config of the version's synthesis run. With `dry_run`, what it would do; nothing is
        written or sent. See `actors/refresh_run.py`.

        Raises:
            KeyError: no such project.
            ValueError: the project has no dataset version yet.
        """
        from actors.refresh_run import refresh_project

        return refresh_project(self, project, cfg, dry_run=dry_run, on_progress=on_progress)

    def dataset_drift(self, project: str, version: str | None = None, against: str | None = None) -> dict:
        """What changed in the source files since `version` (default: the current one) was made, against version
        `against` or (None) the repository on disk now: `added`, `changed`, `deleted`, `renamed` (old, new) paths,
        and `stale`: split -> how many of `version`'s samples came from a changed or deleted file. `against` is
        None when the repository's folder is not on this machine.

        Raises:
            KeyError: no such project.
        """
        from actors.refresh_run import dataset_drift

        version = version or self.store.current_dataset(project)
        if version is None:
            return {"version": None, "against": against or "disk", "added": [], "changed": [], "deleted": [],
                    "renamed": [], "stale": {}}
        return dataset_drift(self.store, project, version, against)

    def adapter_drift(self, project: str) -> list[dict]:
        """Each completed training run of `project`, newest first: `run_id`, the `dataset` version it trained on,
        `trained_on` (its train samples) and `stale` (those from files changed or deleted on disk since); none when
        the repository's folder is not on this machine.

        Raises:
            KeyError: no such project.
        """
        from actors.refresh_run import dataset_drift, files_on_disk

        trained = [r for r in self.store.runs(project, limit=1000)
                   if r["kind"] == "train" and r["status"] == RunStatus.COMPLETED.value and r["summary"].get("dataset")]
        disk = files_on_disk(self.store, project) if trained else None
        if disk is None:
            return []
        out = []
        for r in trained:
            drift = dataset_drift(self.store, project, r["summary"]["dataset"], on_disk=disk)
            total = sum(self.store.dataset_path_counts(project, drift["version"], "train").values())
            out.append({"run_id": r["run_id"], "dataset": drift["version"], "trained_on": total,
                        "stale": drift["stale"]["train"]})
        return out

    def _synth_run_config(self, run_id: str) -> tuple[dict, SynthConfig]:
        run = self.store.run(run_id)
        if run is None or run["kind"] != "synth":
            raise ValueError(f"no synthesis run '{run_id}' (see `doctune runs`)")
        return run, SynthConfig.from_run(run)

    def retry_plan(self, run_id: str) -> dict:
        """What `retry_dead_letters(run_id)` would do, before it does it: `dead_letters` (how many), `reasons`
        (reason → count), `generator`, and `futile` (those the same generator will fail again: the offline
        heuristic's `no_samples`, which only an LLM generator covers, `retry_dead_letters(..., endpoint=...)`)."""
        run, cfg = self._synth_run_config(run_id)
        dead = self.store.dead_letters(run["project"], run_id)
        reasons: dict[str, int] = {}
        for d in dead:
            reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
        futile = reasons.get("no_samples", 0) if cfg.generator == "heuristic" else 0
        return {"run_id": run_id, "dead_letters": len(dead), "reasons": dict(sorted(reasons.items())),
                "generator": cfg.model_name(), "futile": futile}

    def retry_dead_letters(self, run_id: str, wait: bool = False, endpoint: EndpointConfig | None = None) -> dict:
        """Retry a synthesis run's dead letters under the run's own configuration; its finish time and figures
        stand, the retry is added to its summary's `retries`. With `endpoint`, a new run asks that LLM endpoint
        for the same units instead (the offline heuristic's `no_samples` fail again under the heuristic), and
        each dead letter it covers is resolved.

        Raises:
            ValueError: not a synthesis run, or it has no dead letters.
        """
        run, cfg = self._synth_run_config(run_id)
        if endpoint is None:
            return self.synth(run["project"], cfg, retry_failed=True, wait=wait)
        llm = replace(cfg, generator="openai", endpoint=endpoint)
        from actors.synth_run import start_synth_run

        return start_synth_run(self, run["project"], llm, retry_failed=False, new_run=True, dry_run=False,
                               wait=wait, covers=run_id)

    def resume_synth(self, run_id: str, wait: bool = False) -> dict:
        """Go on with a cancelled, failed, interrupted or budget-stopped synthesis run where it stopped.

        Raises:
            ValueError: not a synthesis run, or one that is not the unfinished run of its configuration.
        """
        run, cfg = self._synth_run_config(run_id)
        plan = self.synth(run["project"], cfg, dry_run=True)
        if plan["run_id"] != run_id:
            raise ValueError(f"run {run_id} cannot be resumed: it is {run['status']}, and "
                             f"{plan['run_id'] or 'a new run'} is the one its settings would go on with")
        return self.synth(run["project"], cfg, wait=wait)

    def synth_progress(self, run_id: str) -> dict:
        """A synthesis run's live figures: units done of planned, samples, failures, requests in the last
        minute, 429s, tokens, cost; `failures` (failed attempts by class: http_5xx, http_429, timeout, connection,
        parse_error, ...) and `dead_reasons` (dead letters by reason); `generator`, `model`, `priced` (whether the
        model has a price, so whether `cost_usd` means anything) and `budget_usd` (None: none set). Raises KeyError
        for an unknown run."""
        progress = self.store.synth_progress(run_id)
        run = self.store.run(run_id)
        try:
            cfg = SynthConfig.from_run(run)
        except ConfigError:  # a run stored by an older version: its figures stand, its price is unknown
            stored = run["config"]
            return progress | {"generator": stored.get("generator"), "model": stored.get("model"), "priced": False,
                               "budget_usd": None}
        return progress | {"generator": cfg.generator, "model": cfg.model_name(), "budget_usd": cfg.max_cost_usd,
                           "priced": cfg.price() is not None}

    def limiter_timeline(self, run_id: str) -> list[dict]:
        """A synthesis run's rate limiter over time, a point every few seconds: answers per minute (ok, 429, errors),
        stalls, the in-flight cap, requests in flight and the rate it allowed."""
        return self.store.limiter_timeline(run_id)

    def dead_letters(self, project: str | None = None, run_id: str | None = None) -> list[dict]:
        return self.store.dead_letters(project, run_id)

    def datasets(self, project: str) -> list[dict]:
        return self.store.datasets(project)

    def current_dataset(self, project: str) -> str | None:
        """The version training and export use by default (None: the project has none yet)."""
        return self.store.current_dataset(project)

    def set_current_dataset(self, project: str, version: str) -> None:
        """Make `version` the default of training and export, and the line later synthesis adds onto.

        Raises:
            KeyError: no such version."""
        self.store.set_current_dataset(project, version)

    def dataset_lineage(self, project: str, version: str) -> dict:
        """`version`'s line back to its first version (each with its operation and note), whether it is current,
        and the reviews it leaves out (`left_out`), for a page to warn before using it.

        Raises:
            KeyError: no such version."""
        return self.store.dataset_lineage(project, version)

    def export(self, project: str, cfg: ExportConfig, *, version: str | None = None) -> dict:
        """Write a dataset version (the current one by default) as `cfg` says (Alpaca, ShareGPT, OpenAI messages or
        Parquet files under `cfg.out`); returns the version, the format and the files written.

        Raises:
            ValueError: the project has no dataset version, no version `version`, samples the format cannot
                hold, or a destination that is not a new or empty folder without `force`, a file, a device or under
                /proc (`backend.export.export_dataset`).
            ConfigError: `cfg` has problems (each with its fix).
        """
        from backend.export import export_dataset  # pyarrow: loaded by the commands that write files

        cfg.validate()
        version = version or self.store.current_dataset(project)
        if version is None:
            raise ValueError(f"project '{project}' has no dataset version; run `doctune synth` first")
        rows = self.store.dataset_rows(project, version)
        if not rows:
            known = ", ".join(d["version"] for d in self.datasets(project))
            raise ValueError(f"no dataset version '{version}' in project '{project}' (versions: {known})")
        paths = export_dataset(cfg.chosen(rows), cfg.format, Path(cfg.out), f"{project}_{version}",
                               system_prompt=cfg.system_prompt, force=cfg.force)
        return {"version": version, "format": cfg.format, "files": [str(p) for p in paths]}

    def export_archive(self, project: str, cfg: ExportConfig, *, version: str | None = None) -> dict:
        """`export` into the home's `exports/<project>_<version>_<format>/` (replacing DocTune's files there),
        then that folder as one zip file beside it, for a browser to download. Returns `export`'s answer with
        `folder` and `archive` (the zip's path).

        Raises:
            ValueError, ConfigError: as `export`.
        """
        import shutil

        version = version or self.store.latest_dataset(project)
        folder = self.home / "exports" / f"{project}_{version}_{cfg.format}"
        result = self.export(project, replace(cfg, out=str(folder), force=True), version=version)
        archive = shutil.make_archive(str(folder), "zip", root_dir=folder.parent, base_dir=folder.name)
        return result | {"folder": str(folder), "archive": archive}

    def dataset_profile(self, project: str, version: str | None = None) -> dict | None:
        """Splits, task mix, judge scores, coverage and curation stats of a version (the current one by default);
        None when the project has no dataset yet."""
        version = version or self.store.current_dataset(project)
        return self.store.dataset_profile(project, version) if version else None

    def browse_samples(self, project: str, version: str, *, search: str | None = None, task: str | None = None,
                       split: str | None = None, limit: int = 50, offset: int = 0) -> dict:
        """One page of a version's samples matching the filters, with the total number of matches."""
        return self.store.browse_samples(project, version, search=search or None, task=task, split=split,
                                         limit=limit, offset=offset)

    def review(self, project: str, lines: list[dict], *, version: str | None = None, note: str | None = None,
               source: str = "the review") -> dict:
        """A reviewer's edits and rejections (`backend.review.review_decisions` lines: `sample_id` with the fields
        to edit, or `reject: true`) as a new dataset version on `version` (the current one by default), which stays
        as it was. The decisions are kept and carried into every later version of the new one's line. The
        dashboard's sample browser and `doctune review` both come here.

        Returns: `version` (the new one), `parent`, `edited`, `rejected`.

        Raises:
            ReviewError: a line without a sample id, a field that cannot be edited, a value of the wrong type
                (each problem named with `source` and its line).
            KeyError: no such version, or a sample that is not in it.
            ValueError: the project has no dataset version, or messages edited on a single-turn sample.
        """
        from backend.review import review_decisions

        edits, rejects = review_decisions(lines, source)
        parent = version or self.store.current_dataset(project)
        if parent is None:
            raise ValueError(f"project '{project}' has no dataset version to review; run `doctune synth` first")
        new = self.store.derive_dataset(project, parent, edits=edits, rejects=rejects, note=note)
        return {"version": new, "parent": parent, "edited": len(set(edits) - set(rejects)), "rejected": len(rejects)}

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
        """Train a LoRA adapter on a dataset version (the current one by default), or resume a run.

        Raises:
            KeyError: no such project.
            ValueError: no usable dataset version, or a run that cannot be resumed.
            ConfigError: the config is invalid or does not fit this cluster (each problem with its fix).
        """
        from actors.train_run import start_train_run

        return start_train_run(self, project, cfg, version=version, resume_run=resume_run, wait=wait,
                               on_progress=on_progress)

    def train_from(self, run_id: str, cfg: TrainConfig | None = None, *, version: str | None = None,
                   wait: bool = True, on_progress: Callable[[dict], None] | None = None) -> dict:
        """Continue a completed run's adapter on a dataset version (default: its project's current one) as a new
        run that records `parent_run`. The config is the parent's unless `cfg` is given (same base and LoRA shape).

        Raises:
            ValueError: an unknown run, one not completed or without its adapter, a `cfg` with another base model or
                LoRA shape, or a version without train samples.
            ConfigError: the config does not fit this cluster.
        """
        from actors.train_run import start_train_from

        return start_train_from(self, run_id, cfg, version=version, wait=wait, on_progress=on_progress)

    def latest_adapter_run(self, project: str) -> str | None:
        """The newest completed training run of `project` whose adapter is still on disk (what a refresh's training
        continues), or None."""
        return next((r["run_id"] for r in self.store.runs(project, 1000) if r["kind"] == "train"
                     and r["status"] == RunStatus.COMPLETED and (r["summary"] or {}).get("adapter")
                     and Path(r["summary"]["adapter"], "adapter_model.safetensors").is_file()), None)

    def continue_config(self, run_id: str) -> TrainConfig:
        """The config a run continuing `run_id`'s adapter starts from: the parent's own.

        Raises:
            ValueError: `run_id` cannot be continued (unknown, not completed, no adapter on disk).
        """
        from actors.train_run import continue_config

        return continue_config(self, run_id)[1]

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

    def merge(self, run_id: str, out: str | Path | None = None, dtype: str = "bf16", gguf: bool = False, *,
              wait: bool = True, llama_cpp: str | Path | None = None, gguf_type: str | None = None) -> dict:
        """The run's adapter merged into its base in 16-bit (and GGUF through llama.cpp's converter where it is
        installed), in a merge run's actor. Without `wait`, returns the merge run's `run_id` once its actor is
        started.

        Raises:
            ValueError: no completed training run with an adapter; GGUF asked for without llama.cpp
                (`backend.gguf.LlamaCppMissing` says what to install where).
        """
        from actors.merge_run import start_merge_run

        return start_merge_run(self, run_id, out, dtype, gguf, wait=wait, llama_cpp=llama_cpp, gguf_type=gguf_type)

    def export_model(self, run_id: str, out: str | Path, *, dtype: str = "bf16", gguf: bool = False,
                     verify: bool = True, llama_cpp: str | Path | None = None, gguf_type: str | None = None,
                     wait: bool = True) -> dict:
        """A bundle for vLLM and Ollama in `out` (merged model, adapter, README with the commands, Modelfile,
        manifest; GGUF with `gguf`), then, unless `verify` is off, the merged model's greedy answers to the run's
        latest evaluation compared with the stored ones (`verify`: passed, differences; or skipped and why).

        Raises:
            ValueError: no completed training run with an adapter, `out` is a file, or GGUF asked for without
                llama.cpp.
        """
        from actors.merge_run import start_export_model_run

        return start_export_model_run(self, run_id, out, dtype, gguf, verify, llama_cpp, gguf_type, wait=wait)

    # ---- serving -----------------------------------------------------------------------------
    def serve(self, train_runs: list[str], *, base: str | None = None, host: str = "127.0.0.1", port: int = 8000,
              key: str | None = None, max_batch_size: int = 8, system_prompt: str | None = None) -> dict:
        """Serve training runs' adapters and their base (`base`) behind an OpenAI-compatible endpoint, in a serving
        run on this cluster's Ray Serve; returns `run_id`, `url` and `models` once it answers.

        Raises:
            ValueError: a bad run or host (another host than loopback needs `key`), a server already up, or one that
                failed to start.
        """
        from actors.serve_run import start_serve_run

        return start_serve_run(self, train_runs, base=base, host=host, port=port, key=key,
                               max_batch_size=max_batch_size, system_prompt=system_prompt)

    def serving(self) -> dict | None:
        """The endpoint that is up: {"run_id", "url", "models"}, or None when nothing is served."""
        from actors.serve_run import live_serving

        live = live_serving(self)
        return None if live is None else {"run_id": live["run_id"], "url": live["summary"]["url"],
                                          "models": live["summary"]["models"]}

    def stop_serving(self) -> str | None:
        """End the serving run that is up; its id, or None when nothing was served."""
        from actors.serve_run import stop_serving

        return stop_serving(self)

    def verify_serving(self, train_run: str, *, key: str | None = None, limit: int | None = None) -> dict:
        """The served endpoint's greedy answers to the latest evaluation's prompts of `train_run` against the
        stored ones: `passed`, `checked`, `identical`, `differences` (the first difference of each, with its
        prompt), `eval_run`, `url`.

        Raises:
            ValueError: no completed evaluation of the run, or no endpoint serving it.
        """
        from actors.serve_run import verify_serving

        return verify_serving(self, train_run, key=key, limit=limit)

    def chat_stream(self, model: str, messages: list[dict], *, max_tokens: int = 256, key: str | None = None,
                    url: str | None = None):
        """The served `model`'s answer to `messages`, greedy, as text pieces while they are generated; `url`: the
        endpoint's (the caller's `serving()["url"]`), else it is looked up.

        Raises:
            ValueError: nothing is served (the message names the command that serves).
        """
        from backend.serve import KEY_VARIABLE
        from openai import OpenAI

        if url is None:
            live = self.serving()
            if live is None:
                raise ValueError("nothing is served: `doctune serve --run RUN --detach` starts the endpoint")
            url = live["url"]
        chat = OpenAI(base_url=url, api_key=key or os.environ.get(KEY_VARIABLE) or "none", max_retries=0,
                      timeout=600)
        for chunk in chat.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                  temperature=0, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    def example_prompts(self, train_run: str, n: int = 5) -> list[str]:
        """Up to `n` held-out questions (the test split of the dataset `train_run` trained on), as the user asks
        them."""
        from backend.chat import prompt_messages

        run = self.store.run(train_run)
        if run is None or run["kind"] != "train":
            return []
        rows = [r for r in self.store.dataset_rows(run["project"], run["config"]["dataset"]) if r["split"] == "test"]
        return [prompt_messages(r)[-1]["content"] for r in rows[:n]]

    def train_progress(self, run_id: str) -> dict:
        """A training run's live figures, with the same status `runs` shows: `step` of `max_steps` (None until the
        trainer has planned them), the latest `eval_loss` and `tokens_per_second`, `seconds` (the whole run: the
        attempts before a resume count too) and `seconds_left` (at this attempt's pace; None until it has one);
        its `dataset` version and the `parent_run` whose adapter it continues (None for a fresh adapter).

        Raises:
            KeyError: no such run.
        """
        from backend.store.core import utc_now

        run = self.run(run_id)
        summary = run["summary"] or {}
        latest = self.store.latest_metrics(run_id, ["loss", "eval_loss", "tokens_per_second"])
        events = self.store.run_events(run_id)
        plan = next((e for e in reversed(events) if e["kind"] == "steps"), None)
        loss = latest.get("loss")
        step = loss["step"] if loss else summary.get("global_step")
        out = {"run_id": run_id, "status": run["status"], "step": step,
               "max_steps": plan["detail"]["max_steps"] if plan else summary.get("global_step"),
               "eval_loss": (latest.get("eval_loss") or {}).get("value", summary.get("eval_loss")),
               "tokens_per_second": (latest.get("tokens_per_second") or {}).get("value",
                                                                              summary.get("tokens_per_second")),
               "seconds": summary.get("seconds"), "seconds_left": None,
               "dataset": run["config"].get("dataset"), "parent_run": run["config"].get("parent_run")}
        attempt = next((e for e in reversed(events) if e["kind"] in {"started", "resumed"}), None)
        if run["status"] in ACTIVE and attempt is not None:
            now = utc_now()
            # while it runs, the summary is still the one the attempt before a resume left (or none)
            out["seconds"] = round(summary.get("seconds", 0.0) + (now - attempt["ts"]).total_seconds(), 1)
            if plan is not None and plan["ts"] >= attempt["ts"] and loss and loss["step"] > plan["detail"]["from_step"]:
                pace = (loss["ts"] - plan["ts"]).total_seconds() / (loss["step"] - plan["detail"]["from_step"])
                left = (plan["detail"]["max_steps"] - loss["step"]) * pace - (now - loss["ts"]).total_seconds()
                out["seconds_left"] = round(max(left, 0.0))
        return out

    def follow_up_runs(self, train_run: str) -> list[dict]:
        """The evaluations and merges started for a training run's adapter, newest first, each with its status as
        `runs` shows it (`interrupted` when its process died)."""
        return runs.with_liveness(self.store.follow_up_runs(train_run))

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self, adapter_run: str, cfg: EvalConfig | None = None, *, against: str | None = None,
                 on_progress: Callable[[dict], None] | None = None, wait: bool = True) -> dict:
        """Base against tuned for a completed training run, on its held-out split, the knowledge probes of what
        it trained on, and the retention set; then the pairwise judge when `cfg.judge` is on. Without `wait`,
        returns once the run's actor is started. `against` (default: the run's parent, when it continued one): a
        previous adapter compared with this one on the prompts of files changed between their dataset versions and
        of the unchanged ones (`summary["against"]`).

        Raises:
            ValueError: not a completed training run (either of them), no samples in the split, or an `against` run
                of another project or base model.
            ConfigError: the config has problems (each with its fix).
        """
        from actors.eval_run import start_eval_run

        return start_eval_run(self, adapter_run, cfg or EvalConfig(), on_progress=on_progress, wait=wait,
                              against=against)

    def eval_results(self, eval_run: str, eval_set: str | None = None) -> list[dict]:
        return self.store.eval_results(eval_run, eval_set)

    def eval_learned(self, eval_run: str, examples: int = 3) -> dict:
        """The knowledge probes of an evaluation in plain numbers (`summary`: shares of answers stating the right
        fact, using the repository's real names, inventing one; base and tuned) and up to `examples` answers the
        base got wrong and the tuned model right (`examples`), chosen by score."""
        from backend.evaluate import knowledge_summary, wrong_then_right

        rows = self.store.eval_results(eval_run, "probe")
        return {"summary": knowledge_summary(rows), "examples": wrong_then_right(rows, examples)}

    def eval_health(self, eval_run: str, eval_set: str) -> dict:
        """What could make an evaluation's numbers mislead: `degenerate` (per side, `backend.evaluate.
        degenerate_summary` of the set's outputs), `base_model` (the adapter's base) and `random_weights` (a base
        with random weights, such as `tiny`, whose outputs are noise by construction). Raises KeyError for an
        unknown run."""
        from backend.base_models import TINY
        from backend.evaluate import degenerate_summary

        run = self.store.run(eval_run)
        if run is None:
            raise KeyError(eval_run)
        adapter = self.store.run(run["summary"].get("adapter_run") or run["config"].get("adapter_run") or "")
        base = ((adapter or {}).get("config", {}).get("train", {}).get("model") or {}).get("name_or_path")
        return {"degenerate": degenerate_summary(self.store.eval_results(eval_run, eval_set)), "base_model": base,
                "random_weights": base == TINY}

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
        (`improved` / `regressed`), with the judge's win/tie/loss counts for the set; each row's `degenerate` says
        per side which kind of degenerate output it is (`backend.evaluate.degenerate_kind`; None: a real answer)."""
        from backend.evaluate import degenerate_kind

        view = self.store.eval_view(eval_run, eval_set, task=task, flip=flip, limit=limit, offset=offset)
        for r in view["rows"]:
            r["degenerate"] = {side: degenerate_kind(r[f"{side}_output"]) for side in ("base", "tuned")}
        return view

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
