"""`doctune refresh`: the current dataset version brought up to the repository, paying only for what changed.

    re-ingest (an ingest run) ──▶ plan (`backend.refresh.plan_refresh`) ──▶ a synthesis run of the new requests
        ──▶ curation: kept rows settled in their splits, new samples added ──▶ version N+1 (operation `refresh`)

A dry run plans the same way without writing anything: the files to chunk are read and chunked here, in memory,
and stand in for the re-ingest, so it counts what the real refresh then does. A finished refresh is recorded as a run
of kind `refresh` (its summary: the plan, the synthesis run, the new version).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from backend.chunk import chunk_files, chunker_fingerprint
from backend.curate import curate
from backend.curate_config import CurateConfig
from backend.ingest import plan_ingest
from backend.ingest_config import IngestConfig
from backend.refresh import RefreshPlan, changed_files, plan_refresh
from backend.run_status import RunStatus, new_run_id
from backend.synth_config import SynthConfig
from backend.synthesize import estimate_run
from actors.curate_run import exec_statuses
from actors.store_actor import StoreClient


def refresh_project(client, project: str, cfg: SynthConfig | None = None, *, dry_run: bool = False,
                    on_progress=None) -> dict:
    """Refresh `project`'s current dataset version after its repository changed (see the module docstring).

    Returns the plan's summary (files added, changed, deleted, renamed; samples kept, carried, retired; `requests`
    and `estimate` of the synthesis) and, unless `dry_run`: `synth_run`, `requests_sent` and `dataset` (the new
    version; None when nothing changed).

    Raises:
        KeyError: no such project.
        ValueError: the project has no dataset version to refresh.
    """
    store = client.store
    root = next((p["root"] for p in store.projects() if p["name"] == project), None)
    if root is None:
        raise KeyError(project)
    parent = store.current_dataset(project)
    if parent is None:
        raise ValueError(f"project '{project}' has no dataset version to refresh; run `doctune synth --project "
                         f"{project}` first")
    line = next(d for d in store.datasets(project) if d["version"] == parent)
    source_runs = list(line["source_runs"] or [])
    cfg = (cfg or _synth_config(store, source_runs)).validate()
    ingest_cfg = _ingest_config(store, project)
    if dry_run:
        chunks, files = _simulated_ingest(store, project, root, ingest_cfg)
    else:
        client.ingest(root, project, ingest_cfg)
        chunks = store.chunks(project).to_pylist()
        files = {r["path"]: r["sha256"] for r in store.files(project, "ok").to_pylist()}
    plan = plan_refresh(store.dataset_rows(project, parent), store.samples(source_runs),
                        set(store.dead_letter_keys(source_runs)), chunks,
                        changed_files(store.dataset_files(project, parent), files), cfg, project)
    cached = store.cached_responses([u.cache_key for u in plan.todo])
    estimate = estimate_run([u for u in plan.todo if u.cache_key not in cached], cfg)
    summary = {"project": project, "version": parent, "dry_run": dry_run, **plan.summary(),
               "requests": estimate["requests"], "estimate": estimate}
    if dry_run or plan.nothing_changed:
        return summary | {"dataset": None, "requests_sent": 0, "synth_run": None}
    summary |= _synthesize_and_curate(client, project, cfg, parent, source_runs, plan, on_progress)
    # recorded once done: its work is the ingest and synthesis runs, each a run of its own that a rerun resumes
    run_id = new_run_id("refresh")
    store.create_run(run_id, "refresh", project, {"synth": cfg.to_dict(), "version": parent})
    status = RunStatus.COMPLETED if summary["dataset"] else RunStatus(summary["synth_status"])
    store.finish_run(run_id, status, {k: v for k, v in summary.items() if k != "retired_samples"})
    return summary | {"run_id": run_id}


def _synthesize_and_curate(client, project: str, cfg: SynthConfig, parent: str, source_runs: list[str],
                           plan: RefreshPlan, on_progress) -> dict:
    """The plan's requests in a synthesis run of their own, then the new version; the figures for the summary."""
    from actors.synth_run import start_synth_run

    store, new, synth = client.store, [], {"run_id": None, "status": RunStatus.COMPLETED.value, "requests": 0}
    if plan.todo:
        keys = [u.cache_key for u in plan.todo]
        synth = start_synth_run(client, project, cfg, retry_failed=False, new_run=True, dry_run=False,
                                on_progress=on_progress, keys=keys, curate=False)
        new = store.samples([synth["run_id"]])
    out = {"synth_run": synth["run_id"], "synth_status": synth["status"], "requests_sent": synth["requests"]}
    if synth["status"] != RunStatus.COMPLETED.value:  # stopped or out of budget: rerun to finish, nothing paid twice
        return out | {"dataset": None}
    curate_cfg = CurateConfig.from_dict(store.dataset_config(project, parent), f"dataset {parent}").validate()
    return out | {"dataset": curate_refresh(store, project, parent, source_runs, plan, new, synth["run_id"],
                                            curate_cfg)}


def curate_refresh(store: StoreClient, project: str, parent: str, source_runs: list[str], plan: RefreshPlan,
                   new: list[dict], run_id: str | None, cfg: CurateConfig) -> str | None:
    """The new version: the plan's kept and carried rows settled in their splits (with their judge scores and
    sandbox results), its revived and the `new` samples curated onto them; parent `parent`, operation `refresh`."""
    old = plan.keep + plan.carried
    scores = {r["sample_id"]: r["judge_score"] for r in old if r.get("judge_score") is not None}
    exec_results = {r["sample_id"]: r["exec_status"] for r in old if r.get("exec_status") is not None}
    if cfg.exec_check and new:
        root = next((p["root"] for p in store.projects() if p["name"] == project), None)
        exec_results |= exec_statuses(new, root, cfg.exec_timeout_s)
    result = curate(old + plan.revived + new, cfg, judge_scores=scores, exec_results=exec_results,
                    settled={r["sample_id"]: r["split"] for r in old}, placed=plan.splits)
    if not result.kept:
        return None
    stats = dict(result.stats, dropped=len(result.dropped),
                 refresh={k: v for k, v in plan.summary().items() if k != "retired_samples"})
    runs = source_runs + ([run_id] if run_id else [])
    return store.create_dataset(project, result.kept, source_runs=runs, config=asdict(cfg), stats=stats,
                                parent=parent, operation="refresh", note=f"refresh of {parent}")


def dataset_drift(store: StoreClient, project: str, version: str, against: str | None = None,
                  on_disk: dict[str, str] | None = None) -> dict:
    """What changed in `project`'s files since `version` was made: against version `against`, else the repository
    on disk (`on_disk`, else read now). `stale`: how many of `version`'s samples, per split, came from a file
    changed or deleted since."""
    if against is not None:
        now = store.dataset_files(project, against)
    else:
        now = on_disk if on_disk is not None else files_on_disk(store, project)
        if now is None:  # the repository is not on this machine (any more)
            return {"version": version, "against": None, "added": [], "changed": [], "deleted": [], "renamed": [],
                    "stale": {}}
    changes = changed_files(store.dataset_files(project, version), now)
    gone = set(changes.changed) | set(changes.deleted)
    stale: dict[str, int] = {}
    for split in ("train", "val", "test", "probe"):
        counts = store.dataset_path_counts(project, version, split)
        stale[split] = sum(n for path, n in counts.items() if path in gone)
    return {"version": version, "against": against or "disk", **changes.as_dict(), "stale": stale}


def files_on_disk(store: StoreClient, project: str) -> dict[str, str] | None:
    """path -> sha256 of the files an ingest of the project's repository would read now (nothing is chunked); None
    when its folder is gone."""
    root = next((p["root"] for p in store.projects() if p["name"] == project), None)
    if root is None:
        raise KeyError(project)
    if not Path(root).is_dir():
        return None
    cfg = _ingest_config(store, project)
    known = {path: (sha, chunker, status) for path, (sha, chunker, status) in store.file_index(project).items()
             if status == "ok"}
    plan = plan_ingest(root, cfg, known, chunker_fingerprint(cfg.chunk))
    return {p: known[p][0] for p in plan.unchanged} | {i.path: i.sha256 for i in plan.to_chunk}


def _synth_config(store: StoreClient, source_runs: list[str]) -> SynthConfig:
    """The config of the version's latest synthesis run (the defaults when it has none)."""
    for run_id in reversed(source_runs):
        run = store.run(run_id)
        if run and run["kind"] == "synth":
            return SynthConfig.from_run(run)
    return SynthConfig()


def _ingest_config(store: StoreClient, project: str) -> IngestConfig:
    """The settings of the project's last ingest, so the re-ingest reads and chunks the files as it did."""
    last = next((r["run_id"] for r in store.runs(project, limit=1000) if r["kind"] == "ingest"), None)
    if last is None:
        return IngestConfig()
    return IngestConfig.from_dict({k: v for k, v in store.run(last)["config"].items() if k != "root"}, f"run {last}")


def _simulated_ingest(store: StoreClient, project: str, root: str,
                      cfg: IngestConfig) -> tuple[list[dict], dict[str, str]]:
    """The chunks and the files (path -> sha256) the re-ingest would leave, computed without writing: the files
    to chunk are chunked here, the others' chunks read from the store."""
    plan = plan_ingest(root, cfg, store.file_index(project), chunker_fingerprint(cfg.chunk))
    replaced = {i.path for i in plan.to_chunk} | {s.path for s in plan.skipped} | set(plan.gone)
    files_t, chunks_t = chunk_files(project, plan.to_chunk, cfg.chunk)
    fresh = [dict(c, git_commit=plan.git_commit) for c in chunks_t.to_pylist()]
    chunks = [c for c in store.chunks(project).to_pylist() if c["path"] not in replaced] + fresh
    chunks.sort(key=lambda c: (c["path"], c["ord"]))
    files = {r["path"]: r["sha256"] for r in store.files(project, "ok").to_pylist() if r["path"] not in replaced}
    files |= {r["path"]: r["sha256"] for r in files_t.to_pylist() if r["status"] == "ok"}
    return chunks, files
