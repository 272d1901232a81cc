"""The client API: what the CLI and the dashboard call. No SQL and no model code behind this line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from backend.config import IngestConfig, resolve_home
from actors.runtime import init_ray


class DocTune:
    """A connection to one DocTune home: joins or starts Ray, then finds or creates its store actor.

    Args:
        home: the home folder (default: `DOCTUNE_HOME`, else `data/runtime`).
        ray_address: a cluster to join (default: `RAY_ADDRESS`, else a local cluster).
    """

    def __init__(self, home: str | Path | None = None, ray_address: str | None = None,
                 num_cpus: int | None = None):
        from actors.store_actor import StoreClient

        from actors.runtime import live_cluster_address

        self.home = resolve_home(home)
        # an explicit address, else RAY_ADDRESS, else the cluster this home started, else a local one
        address = ray_address or os.environ.get("RAY_ADDRESS")
        own = None if address else live_cluster_address(self.home)
        self.ray_address = init_ray(address or own, num_cpus=num_cpus, token_auth=own is not None)
        self.store = StoreClient(self.home)

    def ingest(self, path: str | Path, project: str, cfg: IngestConfig | None = None,
               on_progress: Callable[[int, int], None] | None = None,
               on_plan: Callable[[int], None] | None = None):
        from actors.ingest_run import ingest_repository

        return ingest_repository(self.store, Path(path), project, cfg or IngestConfig(),
                                 on_progress=on_progress, on_plan=on_plan)

    def stats(self, project: str) -> dict:
        """Raises KeyError when the project does not exist."""
        return self.store.stats(project)

    def projects(self) -> list[dict]:
        return self.store.projects()

    def runs(self, project: str | None = None, limit: int = 100) -> list[dict]:
        """Runs, newest first; a `running` run whose actor is gone (its process was killed) shows as
        `interrupted` — rerunning the same command resumes it."""
        import ray

        rows = self.store.runs(project, limit)
        for row in rows:
            if row["status"] in {"running", "queued"} and row["kind"] in {"synth", "train"}:
                try:
                    ray.get_actor(f"{row['kind']}-{row['run_id']}")
                except ValueError:
                    row["status"] = "interrupted"
        return rows

    # ---- synthesis ---------------------------------------------------------------------------
    def synth(self, project: str, cfg, *, retry_failed: bool = False, new_run: bool = False, dry_run: bool = False,
              on_progress: Callable[[dict], None] | None = None, curate_cfg=None) -> dict:
        """Generate samples for `project`'s chunks, resuming an unfinished run of the same config.

        Returns a summary: run id, status, counts, tokens, cost, and the dataset version it curated into.
        With `dry_run`, only the plan and its cost estimate (nothing is sent).

        Raises:
            KeyError: no such project.
            ConfigError: the config has problems (each with its fix).
            ValueError: the project has no chunks, or `retry_failed` finds no run to retry.
        """
        from actors.synth_run import start_synth_run

        return start_synth_run(self, project, cfg, retry_failed=retry_failed, new_run=new_run, dry_run=dry_run,
                               on_progress=on_progress, curate_cfg=curate_cfg)

    def dead_letters(self, project: str | None = None, run_id: str | None = None) -> list[dict]:
        return self.store.dead_letters(project, run_id)

    def datasets(self, project: str) -> list[dict]:
        return self.store.datasets(project)

    # ---- training ----------------------------------------------------------------------------
    def train(self, project: str | None, cfg=None, *, version: str | None = None, resume_run: str | None = None,
              wait: bool = True, on_progress: Callable[[dict], None] | None = None) -> dict:
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
        from actors.train_run import cancel_run

        return cancel_run(self, run_id)

    def metrics(self, run_id: str, names: list[str] | None = None):
        return self.store.metrics(run_id, names)

    def merge(self, run_id: str, out: str | Path | None = None, dtype: str = "bf16", gguf: bool = False) -> dict:
        """The run's adapter merged into its base in 16-bit (and a GGUF file where Unsloth is present).

        Raises:
            ValueError: no completed training run with an adapter.
            RuntimeError: GGUF asked for without CUDA and Unsloth.
        """
        from backend.train import export_gguf, merge_to_16bit

        run = self.store.run(run_id)
        adapter = (run or {}).get("summary", {}).get("adapter")
        if not run or run["kind"] != "train" or not adapter:
            raise ValueError(f"run '{run_id}' has no adapter; only a completed training run can be merged")
        out = Path(out) if out else self.home / "runs" / run_id / f"merged-{dtype}"
        result = {"run_id": run_id, "merged": str(merge_to_16bit(Path(adapter), None, out, dtype=dtype))}
        if gguf:
            result["gguf"] = str(export_gguf(Path(adapter), out.parent / "gguf"))
        return result

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self, adapter_run: str, *, split: str = "test", limit: int | None = None,
                 max_new_tokens: int = 128, batch_size: int = 8, judge_cfg=None,
                 on_progress: Callable[[dict], None] | None = None) -> dict:
        """Base against tuned for a completed training run, on its held-out split and the retention set.

        Raises:
            ValueError: not a completed training run, or no samples in `split`.
        """
        from actors.eval_run import start_eval_run

        return start_eval_run(self, adapter_run, split=split, limit=limit, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, judge_cfg=judge_cfg, on_progress=on_progress)

    def eval_results(self, eval_run: str, eval_set: str | None = None) -> list[dict]:
        return self.store.eval_results(eval_run, eval_set)

    def comparison_matrix(self, adapter_runs: list[str], eval_set: str = "test") -> dict:
        """Base and several adapters on one frozen eval set, each metric's mean per model."""
        from actors.eval_run import comparison_matrix

        return comparison_matrix(self, adapter_runs, eval_set)
