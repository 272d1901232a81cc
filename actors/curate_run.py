"""Curation into a new dataset version: optional LLM judge and execution check (both in parallel on Ray),
then validation, dedup and the leakage-aware split of `backend/curate.py`; the result is stored as an
immutable version.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import ray

from backend.curate import curate, exec_check
from backend.curate_config import CurateConfig


@ray.remote
def exec_check_task(samples: list[dict], repo_root: str | None, timeout_s: float) -> dict[str, str]:
    return exec_check(samples, Path(repo_root) if repo_root else None, timeout_s=timeout_s)


def judge_scores(client, project: str, samples: list[dict], synth_cfg) -> dict[str, float]:
    """Scores from the LLM judge for every sample, through the run's limiter; cached responses are reused."""
    import time

    from backend.synthesize import load_template, parse_judgement, render_judge_messages
    from actors.synth_run import generator_pool

    store = client.store
    template = load_template(synth_cfg.prompts_dir, "judge")
    requests = {s["sample_id"]: render_judge_messages(template, s, project, synth_cfg) for s in samples}
    cached = store.cached_responses([key for _, key in requests.values()])
    scores: dict[str, float] = {}
    todo = []
    for sid, (messages, key) in requests.items():
        if key in cached:
            scores[sid] = parse_judgement(cached[key]["content"])[0]
        else:
            todo.append((sid, messages, key))
    if not todo:
        return scores
    from backend.endpoint_config import Secret, api_key

    run_id = f"judge-{time.strftime('%Y%m%d-%H%M%S')}"
    store.create_run(run_id, "judge", project, {"model": synth_cfg.endpoint.model, "samples": len(todo)})
    _, workers = generator_pool(synth_cfg, Secret(api_key()), project, run_id)
    refs = [workers[i % len(workers)].judge.remote(sid, messages, key) for i, (sid, messages, key) in enumerate(todo)]
    results = ray.get(refs)
    judged = []
    for r in results:
        if r["score"] is not None:
            scores[r["sample_id"]] = r["score"]
        judged.append({"sample_id": r["sample_id"], "model": synth_cfg.endpoint.model, "score": r["score"],
                       "reason": r["reason"], "cache_key": r["cache_key"]})
    store.record_synth_batch(run_id, [r["response"] for r in results if r["response"]],
                             [dict(a, chunk_id=None, task="judge", cache_key=r["cache_key"], attempt=n)
                              for r in results for n, a in enumerate(r["attempts"], start=1)], [], [], [])
    store.record_judgements(judged)
    store.finish_run(run_id, "succeeded", {"judged": len(judged), "scored": sum(r["score"] is not None
                                                                                for r in results)})
    return scores


def curate_runs(client, project: str, run_ids: list[str], cfg: CurateConfig | None = None,
                judge_with=None) -> str | None:
    """Curate the samples of `run_ids` into a new dataset version; returns the version (None if no samples).

    Args:
        judge_with: a SynthConfig of an OpenAI-compatible endpoint to score samples with (needs
            `cfg.judge_threshold` to drop any).
    """
    cfg = (cfg or CurateConfig()).validate()
    store = client.store
    samples = store.samples(run_ids)
    if not samples:
        return None
    scores = judge_scores(client, project, samples, judge_with) if judge_with is not None else None
    exec_results = None
    if cfg.exec_check:
        root = next((p["root"] for p in store.projects() if p["name"] == project), None)
        batches = [samples[i:i + 50] for i in range(0, len(samples), 50)]
        exec_results = {}
        for part in ray.get([exec_check_task.remote(b, root, cfg.exec_timeout_s) for b in batches]):
            exec_results.update(part)
    result = curate(samples, cfg, judge_scores=scores, exec_results=exec_results)
    if not result.kept:
        return None
    stats = dict(result.stats, dropped=len(result.dropped))
    return store.create_dataset(project, result.kept, source_runs=run_ids, config=asdict(cfg), stats=stats,
                                note="judged by " + judge_with.endpoint.model if judge_with is not None else None)
