"""Curation into a new dataset version: optional LLM judge and execution check (both in parallel on Ray),
then validation, dedup and the leakage-aware split of `backend/curate.py`; the result is stored as an
immutable version.

`curate_runs` is the work; a synthesis run calls it at its end, and `doctune curate` runs it as a run of its
own (`CurateRun`, kind `curate`, the lifecycle of `actors/runs.py`), whose judge requests are logged under it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import ray

from backend.curate import curate, exec_check
from backend.curate_config import CurateConfig
from backend.run_status import RunStatus, new_run_id
from backend.endpoint_config import Secret, api_key
from backend.synth_config import SynthConfig
from backend.synthesize import load_template, parse_judgement, render_judge_messages
from actors import runs
from actors.llm_pool import generator_pool
from actors.store_actor import StoreClient


EXEC_BATCH = 50
"""Samples per execution-check task."""


# a task whose worker died is not retried as such: `exec_statuses` checks its samples again one by one
@ray.remote(max_retries=0)
def exec_check_task(samples: list[dict], repo_root: str | None, timeout_s: float) -> dict[str, str]:
    return exec_check(samples, Path(repo_root) if repo_root else None, timeout_s=timeout_s)


def exec_statuses(samples: list[dict], repo_root: str | None, timeout_s: float,
                  check=exec_check_task) -> dict[str, str]:
    """sample_id → sandbox status (`exec_check`), in parallel tasks (`check`) of `EXEC_BATCH` samples.

    A task whose process dies (its worker crashed or was killed for memory) fails only its own samples: they are
    checked again one per task, and a sample whose own check dies is `crashed` (dropped as `exec_failed: crashed`);
    the curation goes on."""
    results: dict[str, str] = {}
    batches = [samples[i:i + EXEC_BATCH] for i in range(0, len(samples), EXEC_BATCH)]
    while batches:
        tasks = [(check.remote(batch, repo_root, timeout_s), batch) for batch in batches]
        batches = []
        for ref, batch in tasks:
            try:
                results.update(ray.get(ref))
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError):
                if len(batch) > 1:
                    batches += [[s] for s in batch]
                else:
                    results[batch[0]["sample_id"]] = "crashed"
    return results


def judge_scores(store: StoreClient, project: str, samples: list[dict], judge_cfg: SynthConfig, key: Secret,
                 run_id: str) -> dict[str, float]:
    """Scores from the LLM judge for every sample, through one limiter; cached responses are reused. Requests are
    logged under `run_id`."""
    template = load_template(judge_cfg.prompts_dir, "judge")
    requests = {s["sample_id"]: render_judge_messages(template, s, project, judge_cfg) for s in samples}
    cached = store.cached_responses([key for _, key in requests.values()])
    scores: dict[str, float] = {}
    todo = []
    for sid, (messages, cache_key) in requests.items():
        if cache_key in cached:
            scores[sid] = parse_judgement(cached[cache_key]["content"])[0]
        else:
            todo.append((sid, messages, cache_key))
    if not todo:
        return scores
    _, workers = generator_pool(judge_cfg, key, project, run_id)
    refs = [workers[i % len(workers)].judge.remote(sid, messages, cache_key)
            for i, (sid, messages, cache_key) in enumerate(todo)]
    results = ray.get(refs)
    judged = []
    for r in results:
        if r["score"] is not None:
            scores[r["sample_id"]] = r["score"]
        judged.append({"sample_id": r["sample_id"], "model": judge_cfg.endpoint.model, "score": r["score"],
                       "reason": r["reason"], "cache_key": r["cache_key"]})
    store.record_synth_batch(run_id, [r["response"] for r in results if r["response"]],
                             [dict(a, chunk_id=None, task="judge", cache_key=r["cache_key"], attempt=n)
                              for r in results for n, a in enumerate(r["attempts"], start=1)], [], [], [])
    store.record_judgements(judged)
    return scores


ADDING = ("synthesis", "retry", "refresh")
"""Operations whose new samples join the current version's: curated together with them, never replacing them."""


def curate_runs(store: StoreClient, project: str, run_ids: list[str], cfg: CurateConfig | None = None,
                judge_with: SynthConfig | None = None, key: Secret | None = None,
                run_id: str | None = None, operation: str = "curation") -> str | None:
    """Curate the samples of `run_ids` into a new dataset version on the project's current one; returns the version
    (None if no samples).

    Args:
        judge_with: an OpenAI-compatible endpoint to score samples with (needs `cfg.judge_threshold` to drop
            any), called with `key`; its requests are logged under `run_id`.
        operation: what made the samples. An `ADDING` one curates them together with the current version's runs
            (new version = current + new); `curation` curates exactly `run_ids` again. Either way the new version's
            parent is the current one, whose reviews it keeps (`create_dataset`).
    """
    cfg = (cfg or CurateConfig()).validate()
    parent = store.current_dataset(project)
    settled: dict[str, str] = {}
    scores: dict[str, float] = {}
    exec_results: dict[str, str] = {}
    if parent and operation in ADDING:
        line = next(d for d in store.datasets(project) if d["version"] == parent)
        run_ids = list(dict.fromkeys([*(line["source_runs"] or []), *run_ids]))
        # the current version's samples stay as they were curated: their splits, judge scores and sandbox results
        for r in store.dataset_rows(project, parent):
            settled[r["sample_id"]] = r["split"]
            if r["judge_score"] is not None:
                scores[r["sample_id"]] = r["judge_score"]
            if r["exec_status"] is not None:
                exec_results[r["sample_id"]] = r["exec_status"]
    samples = store.samples(run_ids)
    if not samples:
        return None
    if judge_with is not None:
        scores |= judge_scores(store, project, samples, judge_with, key or Secret(None), run_id or run_ids[0])
    if cfg.exec_check:
        root = next((p["root"] for p in store.projects() if p["name"] == project), None)
        exec_results |= exec_statuses(samples, root, cfg.exec_timeout_s)
    result = curate(samples, cfg, judge_scores=scores, exec_results=exec_results, settled=settled)
    if not result.kept:
        return None
    stats = dict(result.stats, dropped=len(result.dropped))
    return store.create_dataset(project, result.kept, source_runs=run_ids, config=asdict(cfg), stats=stats,
                                parent=parent, operation=operation,
                                note="judged by " + judge_with.endpoint.model if judge_with is not None else None)


@ray.remote
class CurateRun:
    """`curate_runs` as a run of its own, for `doctune curate` and the dashboard."""

    def __init__(self, home: str, run_id: str, project: str, source_runs: list[str], cfg: CurateConfig,
                 judge_with: SynthConfig | None, key: Secret):
        self.store = StoreClient(Path(home))
        self.run_id, self.project, self.source_runs = run_id, project, source_runs
        self.cfg, self.judge_with, self.key = cfg, judge_with, key

    def run(self) -> dict:
        with runs.recorded(self.store, self.run_id, {"source_runs": self.source_runs, "dataset": None}) as summary:
            summary["dataset"] = curate_runs(self.store, self.project, self.source_runs, self.cfg, self.judge_with,
                                             self.key, self.run_id)
        return {"run_id": self.run_id, "status": RunStatus.COMPLETED.value, **summary}

    def progress(self) -> dict:
        return {"status": RunStatus.RUNNING.value}  # an actor that answers has started its run

    def cancel(self) -> None:
        """Curation is short and all-or-nothing: it finishes (a version is immutable once written)."""


def start_curate_run(client, project: str, source_runs: list[str], cfg: CurateConfig | None = None,
                     judge_with: SynthConfig | None = None, wait: bool = True) -> dict:
    """Curate `source_runs` into a new dataset version in a run of kind `curate`.

    Returns the run's summary: `run_id`, `status`, `dataset` (None when no sample survived).

    Raises:
        ConfigError: the curation config has problems.
    """
    cfg = (cfg or CurateConfig()).validate()
    run_id = new_run_id("curate")
    judge_model = judge_with.endpoint.model if judge_with else None
    client.store.create_run(run_id, "curate", project,
                            {"source_runs": source_runs, "curate": asdict(cfg), "judge_model": judge_model})
    client.store.update_run(run_id, status=RunStatus.QUEUED)
    handle = runs.launch(CurateRun, run_id, str(client.home), run_id, project, source_runs, cfg, judge_with,
                         Secret(api_key()))
    if not wait:
        return {"run_id": run_id, "status": RunStatus.QUEUED.value, "detached": True}
    return runs.watch(handle)
