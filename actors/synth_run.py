"""The synthesis run: an async orchestrator actor, async generator actors and one shared limiter actor.

    SynthRun ──units──▶ GeneratorWorker × N ──acquire/release──▶ Limiter (RPM, TPM, in-flight cap, budget)
        │                     └── OpenAI-compatible HTTP (or the offline heuristic)
        └── every result ──▶ store actor (response cache, request log, samples, dead letters)

The workers and the limiter are the LLM pool (`actors/llm_pool.py`), shared with both judges; the
retry loop they run is `backend/llm_request.py`.

Crash safety: a response is written to the store as soon as it arrives, before its unit counts as done.
A rerun of the same config resumes the same run: units with samples or a dead letter are skipped, and
units whose response is cached are parsed again without a request. So a `kill -9` costs at most the
requests that were in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from pathlib import Path

import ray

from backend.run_status import RunStatus, new_run_id
from backend.endpoint_config import Secret, api_key
from backend.synth_config import SynthConfig
from backend.synthesize import Unit, build_samples, estimate_run, parse_samples, plan_units
from actors import runs
from actors.curate_run import curate_runs
from actors.llm_pool import AuthFailed, BudgetExhausted, generator_pool
from actors.store_actor import StoreClient

LIMITER_POINT_S = 5.0  # a point of the limiter's timeline every so often: 720 a run-hour


@ray.remote
class SynthRun:
    """Orchestrates one synthesis run and curates its samples; outlives the command that started it.

    Args:
        plan: what the caller planned (units, done before, estimate): the start of the run's summary.
        curate_cfg: how the samples are curated into a dataset version at the end (None: the defaults).
    """

    def __init__(self, home: str, run_id: str, project: str, cfg: dict, key: Secret, retry_failed: bool,
                 plan: dict, curate_cfg=None):
        self.store = StoreClient(Path(home))
        self.plan, self.curate_cfg = plan, curate_cfg
        self.run_id, self.project = run_id, project
        self.cfg = SynthConfig.from_dict(cfg)
        self.key = key
        self.retry_failed = retry_failed
        self.counts = {"units": 0, "done": 0, "cached": 0, "skipped": 0, "failed": 0, "samples": 0,
                       "requests": 0, "http_429": 0, "errors": 0, "tokens_in": 0, "tokens_out": 0,
                       "cost_usd": 0.0}
        self.request_times: deque[float] = deque()
        self.status = RunStatus.QUEUED
        self.error: str | None = None
        self.cancelled = False
        self.limiter = None
        self.sampler: asyncio.Task | None = None

    async def run(self) -> dict:
        """The run to its end, then its samples curated into a new dataset version; returns the summary."""
        try:
            await self._main()
            return await self._summary()
        finally:
            runs.end_current_actor()

    async def cancel(self) -> None:
        self.cancelled = True

    async def progress(self) -> dict:
        now = time.monotonic()
        while self.request_times and self.request_times[0] < now - 60:
            self.request_times.popleft()
        out = dict(self.counts, status=self.status, error=self.error, run_id=self.run_id,
                   rpm=len(self.request_times))
        if self.limiter is not None:
            out["limiter"] = await self.limiter.snapshot.remote()
        return out

    async def _summary(self) -> dict:
        """The run's summary for its caller; its samples curated into a dataset version where it made any."""
        final = await self.progress()
        summary = {**self.plan, "run_id": self.run_id, **{k: final[k] for k in (
            "status", "error", "done", "cached", "failed", "samples", "requests", "http_429", "tokens_in",
            "tokens_out", "cost_usd")}}
        dead = await self.store.actor.dead_letters.remote(self.project, self.run_id)
        summary["dead_letters"] = len(dead)
        summary["dead_reasons"] = dict(sorted(Counter(d["reason"] for d in dead).items()))
        usage = await self.store.actor.run_usage.remote(self.run_id)
        if self.status in {RunStatus.COMPLETED, RunStatus.BUDGET_STOPPED} and usage["samples"]:
            # curation waits on the store and on its own tasks: on a thread, so `progress` still answers
            summary["dataset"] = await asyncio.to_thread(curate_runs, self.store, self.project, [self.run_id],
                                                         self.curate_cfg)
            # on the run too, so a page that did not wait for it can show where its samples went
            run = await self.store.actor.run.remote(self.run_id)
            await self.store.actor.update_run.remote(self.run_id,
                                                     summary=run["summary"] | {"dataset": summary["dataset"]})
        return summary

    async def _main(self) -> None:
        try:
            self.status = RunStatus.RUNNING
            await self._run()
            if self.status == RunStatus.RUNNING:
                self.status = RunStatus.COMPLETED
        except BudgetExhausted:
            self.status = RunStatus.BUDGET_STOPPED
        except AuthFailed as exc:
            self.status, self.error = RunStatus.FAILED, str(exc)
        except Exception as exc:  # recorded on the run; the rerun resumes
            self.status, self.error = RunStatus.FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            try:
                await self._limiter_point(final=True)
                await self._writer_drain()
                usage = await self.store.actor.run_usage.remote(self.run_id)
                summary = dict(self.counts, **{k: usage[k] for k in ("samples", "dead_letters", "cost_usd")})
                await self.store.actor.finish_run.remote(self.run_id, self.status, summary, self.error)
            except Exception as exc:  # the store is gone too: nothing more to record
                self.error = self.error or f"could not record the end of the run: {exc}"

    async def _run(self) -> None:
        cfg = self.cfg
        chunks = (await self.store.actor.chunks.remote(self.project)).to_pylist()
        units = plan_units(chunks, cfg, self.project)
        finished = await self.store.actor.finished_units.remote(self.run_id)
        if self.retry_failed:
            todo = [u for u in units if finished.get(u.cache_key) == "dead"]
        else:
            todo = [u for u in units if u.cache_key not in finished]
        self.counts["units"] = len(units)
        self.counts["skipped"] = len(units) - len(todo)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.writer = asyncio.get_running_loop().create_task(self._writer())
        cached = await self.store.actor.cached_responses.remote([u.cache_key for u in todo])
        fresh = []
        for u in todo:
            hit = cached.get(u.cache_key)
            if hit is None:
                fresh.append(u)
                continue
            # paid for before the crash: parse again, no request
            items = parse_samples(hit["content"])
            samples = build_samples(u, items, project=self.project, run_id=self.run_id,
                                    generator=cfg.model_name(), language=cfg.language)
            self.counts["cached"] += 1
            await self.queue.put({"cache_key": u.cache_key, "status": "ok", "samples": samples, "attempts": [],
                                  "unit": u.as_dict(), "response": None})
        if not fresh:
            return
        spent = (await self.store.actor.run_usage.remote(self.run_id))["cost_usd"]
        self.limiter, workers = generator_pool(cfg, self.key, self.project, self.run_id)
        await self.limiter.add_spent.remote(spent)
        self.sampler = asyncio.get_running_loop().create_task(self._limiter_points())
        slots = asyncio.Semaphore(cfg.endpoint.concurrency)
        budget_hit = False

        async def one(i: int, u: Unit) -> None:
            nonlocal budget_hit
            try:
                result = await workers[i % len(workers)].run_unit.remote(u.as_dict())
            except BudgetExhausted:
                budget_hit = True
                return
            finally:
                slots.release()
            await self.queue.put(result)

        tasks = []
        for i, u in enumerate(fresh):
            await slots.acquire()
            if budget_hit or self.cancelled:
                slots.release()
                break
            tasks.append(asyncio.get_running_loop().create_task(one(i, u)))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, AuthFailed):
                raise r
            if isinstance(r, BaseException) and not isinstance(r, BudgetExhausted):
                raise r
        if budget_hit:
            raise BudgetExhausted()
        if self.cancelled:
            self.status = RunStatus.CANCELLED

    async def _limiter_points(self) -> None:
        """The limiter's state into the run's metrics every LIMITER_POINT_S, for the synthesis page's chart."""
        while True:
            await asyncio.sleep(LIMITER_POINT_S)
            await self._limiter_point()

    async def _limiter_point(self, final: bool = False) -> None:
        if final and self.sampler is not None:
            self.sampler.cancel()  # a point cut short loses nothing: the points hold counts so far
        if self.limiter is not None:
            rows = await self.limiter.timeline_point.remote()
            await self.store.actor.record_metrics.remote(self.run_id, rows)

    async def _writer(self) -> None:
        """Write results as they arrive, several per transaction when they queue up behind a write."""
        while True:
            first = await self.queue.get()
            if first is None:
                return
            batch = [first]
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if item is None:
                    await self._write(batch)
                    return
                batch.append(item)
            await self._write(batch)

    async def _writer_drain(self) -> None:
        if getattr(self, "writer", None) is not None:
            await self.queue.put(None)
            await self.writer

    async def _write(self, batch: list[dict]) -> None:
        responses, requests, samples, dead = [], [], [], []
        now = time.monotonic()
        for r in batch:
            unit = r["unit"]
            for n, a in enumerate(r["attempts"], start=1):
                requests.append({"chunk_id": unit["chunk_id"], "task": unit["task"], "cache_key": r["cache_key"],
                                 "attempt": n, **a})
                self.request_times.append(now)
                self.counts["requests"] += 1
                self.counts["http_429"] += a["status"] == "http_429"
                self.counts["errors"] += a["status"] not in {"ok", "http_429"}
                self.counts["tokens_in"] += a["tokens_in"]
                self.counts["tokens_out"] += a["tokens_out"]
                self.counts["cost_usd"] = round(self.counts["cost_usd"] + a["cost_usd"], 6)
            if r["status"] == "ok":
                if r["response"]:
                    responses.append(r["response"])
                samples += r["samples"]
                self.counts["done"] += 1
                self.counts["samples"] += len(r["samples"])
            else:
                dead.append({"cache_key": r["cache_key"], "chunk_id": unit["chunk_id"], "task": unit["task"],
                             "reason": r["reason"], "detail": r["detail"], "attempts": len(r["attempts"])})
                self.counts["failed"] += 1
        # a retried dead letter is resolved either way: by its samples, or by the new dead letter
        retried = [r["cache_key"] for r in batch] if self.retry_failed else []
        await self.store.actor.record_synth_batch.remote(self.run_id, responses, requests, samples, dead, retried)


def start_synth_run(client, project: str, cfg: SynthConfig, *, retry_failed: bool, new_run: bool, dry_run: bool,
                    on_progress=None, curate_cfg=None, wait: bool = True) -> dict:
    """The caller's side of a run: plan, estimate, create or resume the run, start its actor and watch it.

    Without `wait`, returns once the actor is started: the run (and its curation) outlives the page or command
    that started it."""
    cfg.validate()
    store = client.store
    if project not in {p["name"] for p in store.projects()}:
        raise KeyError(project)
    chunks = store.chunks(project).to_pylist()
    if not chunks:
        raise ValueError(f"project '{project}' has no chunks; run `doctune ingest PATH --project {project}` first")
    fingerprint = cfg.fingerprint()
    if retry_failed:
        run_id = store.find_run(project, "synth", fingerprint, unfinished_only=False)
        if run_id is None or not store.dead_letters(project, run_id):
            raise ValueError(f"no dead letters to retry for project '{project}' under this configuration")
    else:
        run_id = None if new_run else store.find_run(project, "synth", fingerprint)
    units = plan_units(chunks, cfg, project)
    finished = store.finished_units(run_id) if run_id else {}
    todo = [u for u in units if (finished.get(u.cache_key) == "dead" if retry_failed else u.cache_key not in finished)]
    cached = store.cached_responses([u.cache_key for u in todo])
    estimate = estimate_run([u for u in todo if u.cache_key not in cached], cfg)
    plan = {"project": project, "run_id": run_id, "resuming": run_id is not None, "units": len(units),
            "done_before": len(units) - len(todo), "cached": len(cached), "estimate": estimate}
    if dry_run:
        return {"dry_run": True, **plan}
    if cfg.generator == "openai" and not api_key() and not _is_local(cfg.endpoint.base_url):
        raise ValueError("no API key: set DOCTUNE_API_KEY (or DEEPSEEK_API_KEY / OPENAI_API_KEY), "
                         "or use --generator heuristic")
    if run_id is None:
        run_id = new_run_id("synth")
        config = cfg.to_dict() | {"fingerprint": fingerprint}
        store.create_run(run_id, "synth", project, config)
    else:
        runs.ensure_not_running(run_id)
        store.set_run_status(run_id, RunStatus.RUNNING)
    # the plan, for live progress (the run's final summary replaces it)
    store.update_run(run_id, summary={"units": len(units), "todo": len(todo), "estimate": estimate})
    plan["run_id"] = run_id
    handle = runs.launch(SynthRun, run_id, str(client.home), run_id, project, cfg.to_dict(), Secret(api_key()),
                         retry_failed, plan, curate_cfg, max_concurrency=64)
    if not wait:
        return {**plan, "status": RunStatus.RUNNING.value, "detached": True}
    return runs.watch(handle, on_progress, poll_s=0.5)


def _is_local(url: str) -> bool:
    host = url.split("://")[-1].split("/")[0].rsplit(":", 1)[0]
    return host in {"127.0.0.1", "localhost", "[::1]"}
