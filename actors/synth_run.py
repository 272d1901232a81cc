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

A unit's failure is that unit's dead letter, never the run's: whatever one unit raises (a heuristic's bug, an answer
the store refuses) is stored with its exception and traceback, and the run goes on. Only a refused key
(`AuthFailed`) or the budget stops every unit.

Stopping: `doctune cancel` (`cancelled`) and Ctrl-C in the command that watches (`interrupted`) stop spending at
once: nothing more is sent, the requests in flight are cancelled in the generator actors (closing their HTTP
connections), the answers already received are stored, and the rerun resumes. With `target_samples`, the run stops
the same way once enough samples passed validation; the units left are counted as not needed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from pathlib import Path

import ray

from backend.run_status import RunStatus, new_run_id
from backend.curate import validate_sample
from backend.curate_config import CurateConfig
from backend.endpoint_config import Secret, api_key
from backend.synth_config import PROBE_TASK, SynthConfig
from backend.synthesize import (Unit, build_samples, coverage_order, estimate_run, parse_samples, plan_units,
                                unit_failure)
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
        only: the chunks whose units to run, all others left out (None: every unit planned).
        covers: a run whose dead letters of those chunks this run takes over (another generator's run, whose task
            draw may differ): each one whose chunk this run makes samples for is resolved there.
        keys: the units (cache keys) to run, all others left out (None: every unit `only` leaves).
        curate: curate the samples into a dataset version at the end (a refresh curates them itself).
    """

    def __init__(self, home: str, run_id: str, project: str, cfg: dict, key: Secret, retry_failed: bool,
                 plan: dict, curate_cfg=None, only: list[str] | None = None, covers: str | None = None,
                 keys: list[str] | None = None, curate: bool = True):
        self.store = StoreClient(Path(home))
        self.plan, self.curate_cfg = plan, curate_cfg
        self.run_id, self.project = run_id, project
        self.cfg = SynthConfig.from_dict(cfg)
        self.key = key
        self.retry_failed = retry_failed
        self.only = only
        self.covers = covers
        self.keys, self.curate = keys, curate
        self.started = time.time()
        self.counts = {"units": 0, "done": 0, "cached": 0, "skipped": 0, "failed": 0, "samples": 0,
                       "requests": 0, "http_429": 0, "errors": 0, "tokens_in": 0, "tokens_out": 0,
                       "cost_usd": 0.0, "valid_samples": 0, "not_needed": 0}
        self.request_times: deque[float] = deque()
        self.status = RunStatus.QUEUED
        self.error: str | None = None
        self.stop: RunStatus | None = None
        self.in_flight: set[ray.ObjectRef] = set()
        self.todo = self.delivered = 0  # units this attempt has to do, and results that came back
        self.limiter = None
        self.sampler: asyncio.Task | None = None

    async def run(self) -> dict:
        """The run to its end, then its samples curated into a new dataset version; returns the summary."""
        try:
            await self._main()
            return await self._summary()
        finally:
            runs.end_current_actor()

    async def cancel(self, status: RunStatus = RunStatus.CANCELLED) -> None:
        """Stop spending now, ending as `status` (`interrupted` when the watching command got Ctrl-C): nothing more
        is sent and the requests in flight are cancelled; the answers already received are stored."""
        self.stop = self.stop or RunStatus(status)
        self._cancel_in_flight()

    def _cancel_in_flight(self) -> None:
        """Cancel the generator actors' tasks of this run: their asyncio tasks end, HTTP connections included."""
        for ref in list(self.in_flight):
            ray.cancel(ref)

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
            "status", "error", "done", "cached", "failed", "samples", "requests", "http_429", "errors", "tokens_in",
            "tokens_out", "cost_usd", "not_needed")}}
        dead = await self.store.actor.dead_letters.remote(self.project, self.run_id)
        summary["dead_letters"] = len(dead)
        summary["dead_reasons"] = dict(sorted(Counter(d["reason"] for d in dead).items()))
        usage = await self.store.actor.run_usage.remote(self.run_id)
        extra = {}
        if self.covers is not None:
            extra["covered"] = await self.store.actor.resolve_covered_dead_letters.remote(self.covers, self.run_id)
        if self.curate and self.status in {RunStatus.COMPLETED, RunStatus.BUDGET_STOPPED} and usage["samples"]:
            # curation waits on the store and on its own tasks: on a thread, so `progress` still answers
            retry = self.retry_failed or self.covers is not None
            extra["dataset"] = await asyncio.to_thread(curate_runs, self.store, self.project, [self.run_id],
                                                       self.curate_cfg, operation="retry" if retry else "synthesis")
        if extra:  # on the run too, so a page that did not wait for it can show where its samples went
            run = await self.store.actor.run.remote(self.run_id)
            await self.store.actor.update_run.remote(self.run_id, summary=run["summary"] | extra)
        summary |= extra
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
                totals = {k: usage[k] for k in ("samples", "dead_letters", "cost_usd")}
                if self.retry_failed:  # the run's own figures and finish time stand; the retry is added to them
                    before = (await self.store.actor.run.remote(self.run_id))["summary"]
                    retry = {"started": self.started, "finished": time.time(), "status": str(self.status),
                             **{k: self.counts[k] for k in ("done", "failed", "samples", "requests")},
                             "units": self.counts["units"] - self.counts["skipped"]}
                    summary = {k: v for k, v in before.items() if k != "retrying"} | totals | {
                        "retries": before.get("retries", []) + [retry]}
                else:
                    summary = dict(self.counts, **totals)
                await self.store.actor.finish_run.remote(self.run_id, self.status, summary, self.error,
                                                         self.retry_failed)
            except Exception as exc:  # the store is gone too: nothing more to record
                self.error = self.error or f"could not record the end of the run: {exc}"

    async def _run(self) -> None:
        cfg = self.cfg
        chunks = (await self.store.actor.chunks.remote(self.project)).to_pylist()
        units = _only(plan_units(chunks, cfg, self.project), self.only, self.keys)
        finished = await self.store.actor.finished_units.remote(self.run_id)
        if self.retry_failed:
            todo = [u for u in units if finished.get(u.cache_key) == "dead"]
        else:
            todo = [u for u in units if u.cache_key not in finished]
        self.counts["units"] = len(units)
        self.counts["skipped"] = len(units) - len(todo)
        self.todo = len(todo)
        if cfg.target_samples is not None:
            todo = coverage_order(todo, cfg.seed)
            self.counts["valid_samples"] = self._valid(await self.store.actor.samples.remote([self.run_id]))
        self.queue: asyncio.Queue = asyncio.Queue()
        self.writer = asyncio.get_running_loop().create_task(self._writer())
        cached = await self.store.actor.cached_responses.remote([u.cache_key for u in todo])
        fresh = []
        for u in todo:
            hit = cached.get(u.cache_key)
            if hit is None:
                fresh.append(u)
            elif not self._enough():  # paid for before the crash: parsed again, no request
                self.counts["cached"] += 1
                await self._arrived(self._from_cache(u, hit["content"]))
        if not fresh or self._enough() or self.stop:
            self._end()
            return
        spent = (await self.store.actor.run_usage.remote(self.run_id))["cost_usd"]
        self.limiter, workers = generator_pool(cfg, self.key, self.project, self.run_id)
        await self.limiter.add_spent.remote(spent)
        self.sampler = asyncio.get_running_loop().create_task(self._limiter_points())
        slots = asyncio.Semaphore(cfg.endpoint.concurrency)
        budget_hit = False

        async def one(i: int, u: Unit) -> None:
            nonlocal budget_hit
            ref = workers[i % len(workers)].run_unit.remote(u.as_dict())
            self.in_flight.add(ref)
            try:
                try:
                    result = await ref
                except BudgetExhausted:
                    budget_hit, result = True, None
                except ray.exceptions.TaskCancelledError:
                    result = None  # stopped (cancel, Ctrl-C, enough samples): not done, the rerun sends it again
                except AuthFailed:
                    raise
                except Exception as exc:  # its worker died, or raised: this unit's dead letter, not the run's
                    result = _dead(u.as_dict(), "exception", unit_failure(exc), [])
                finally:
                    self.in_flight.discard(ref)
                if result is not None:
                    await self._arrived(result)
            finally:
                slots.release()  # after the result is counted, so no unit is sent once the target is met
            if self._enough():
                self._cancel_in_flight()

        tasks = []
        for i, u in enumerate(fresh):
            await slots.acquire()
            if budget_hit or self.stop or self._enough():
                slots.release()
                break
            tasks.append(asyncio.get_running_loop().create_task(one(i, u)))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, BudgetExhausted):
                raise r  # AuthFailed (or a bug of this actor): the whole run stops
        if budget_hit:
            raise BudgetExhausted()
        self._end()

    def _enough(self) -> bool:
        return self.cfg.target_samples is not None and self.counts["valid_samples"] >= self.cfg.target_samples

    def _end(self) -> None:
        """Sending has ended: the status of a stopped run, or the units a run with enough samples did not need."""
        if self.stop:
            self.status = self.stop
        elif self._enough():
            self.counts["not_needed"] = self.todo - self.delivered

    def _valid(self, samples: list[dict]) -> int:
        """Training samples (not probes) that pass curation's validation, which `target_samples` counts."""
        cfg = self.curate_cfg or CurateConfig()
        return sum(s["task"] != PROBE_TASK and not validate_sample(s, cfg) for s in samples)

    async def _arrived(self, result: dict) -> None:
        """A unit's result, to the writer; its valid samples counted towards `target_samples`."""
        self.delivered += 1
        if result["status"] == "ok":
            self.counts["valid_samples"] += self._valid(result["samples"])
        await self.queue.put(result)

    def _from_cache(self, u: Unit, content: str) -> dict:
        try:
            samples = build_samples(u, parse_samples(content), project=self.project, run_id=self.run_id,
                                    generator=self.cfg.model_name(), language=self.cfg.language)
        except Exception as exc:  # a response that parsed when it was paid for and no longer does
            return _dead(u.as_dict(), "exception", unit_failure(exc), [])
        return {"cache_key": u.cache_key, "status": "ok", "samples": samples, "attempts": [], "unit": u.as_dict(),
                "response": None}

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
        """One transaction for the batch; if the store refuses it, each result on its own, so a result the store
        cannot take (an answer holding a lone surrogate, say) becomes its unit's dead letter and the others land."""
        try:
            await self._record(batch)
        except Exception:
            for r in batch:
                try:
                    await self._record([r])
                except Exception as exc:
                    await self._record([_dead(r["unit"], "exception", unit_failure(exc), r["attempts"])])

    async def _record(self, batch: list[dict]) -> None:
        """Store a batch of results, then count it (a refused batch is counted when it lands another way)."""
        responses, requests, samples, dead = [], [], [], []
        for r in batch:
            unit = r["unit"]
            requests += [{"chunk_id": unit["chunk_id"], "task": unit["task"], "cache_key": r["cache_key"],
                          "attempt": n, **a} for n, a in enumerate(r["attempts"], start=1)]
            if r["status"] == "ok":
                if r["response"]:
                    responses.append(r["response"])
                samples += r["samples"]
            else:
                dead.append({"cache_key": r["cache_key"], "chunk_id": unit["chunk_id"], "task": unit["task"],
                             "reason": r["reason"], "detail": r["detail"], "attempts": len(r["attempts"])})
        # a retried dead letter is resolved either way: by its samples, or by the new dead letter
        retried = [r["cache_key"] for r in batch] if self.retry_failed else []
        await self.store.actor.record_synth_batch.remote(self.run_id, responses, requests, samples, dead, retried)
        now = time.monotonic()
        for a in (a for r in batch for a in r["attempts"]):
            self.request_times.append(now)
            self.counts["requests"] += 1
            self.counts["http_429"] += a["status"] == "http_429"
            self.counts["errors"] += a["status"] not in {"ok", "http_429"}
            self.counts["tokens_in"] += a["tokens_in"]
            self.counts["tokens_out"] += a["tokens_out"]
            self.counts["cost_usd"] = round(self.counts["cost_usd"] + a["cost_usd"], 6)
        for r in batch:
            ok = r["status"] == "ok"
            self.counts["done"] += ok
            self.counts["failed"] += not ok
            self.counts["samples"] += len(r["samples"]) if ok else 0


def _dead(unit: dict, reason: str, detail: str, attempts: list[dict]) -> dict:
    """A unit's result as a dead letter."""
    return {"cache_key": unit["cache_key"], "status": "dead", "reason": reason, "detail": detail,
            "attempts": attempts, "samples": [], "response": None, "unit": unit}


def start_synth_run(client, project: str, cfg: SynthConfig, *, retry_failed: bool, new_run: bool, dry_run: bool,
                    on_progress=None, curate_cfg=None, wait: bool = True, covers: str | None = None,
                    keys: list[str] | None = None, curate: bool = True) -> dict:
    """The caller's side of a run: plan, estimate, create or resume the run, start its actor and watch it.

    Without `wait`, returns once the actor is started: the run (and its curation) outlives the page or command
    that started it. With `covers` (a run id), a new run of only that run's dead letters' chunks, under `cfg`'s
    generator: the offline generator's `no_samples` handed to an LLM. With `keys`, a new run of only those units,
    curated into a version only with `curate` (`SynthRun`)."""
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
    only = None
    if covers is not None:
        only = sorted({d["chunk_id"] for d in store.dead_letters(project, covers)})
        if not only:
            raise ValueError(f"run {covers} has no dead letters to hand over")
        run_id = None
    units = _only(plan_units(chunks, cfg, project), only, keys)
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
    if retry_failed:  # the finished run keeps its figures and its finish time; the retry is noted beside them
        before = store.run(run_id)["summary"]
        store.update_run(run_id, status=RunStatus.RUNNING, summary=before | {"retrying": len(todo)})
    else:
        if plan["resuming"]:
            store.set_run_status(run_id, RunStatus.RUNNING)
        # the plan, for live progress (the run's final summary replaces it)
        store.update_run(run_id, summary={"units": len(units), "todo": len(todo), "estimate": estimate}
                         | ({"covers": covers} if covers else {}))
    plan["run_id"] = run_id
    handle = runs.launch(SynthRun, run_id, str(client.home), run_id, project, cfg.to_dict(), Secret(api_key()),
                         retry_failed, plan, curate_cfg, only, covers, keys, curate, max_concurrency=64)
    if not wait:
        return {**plan, "status": RunStatus.RUNNING.value, "detached": True}
    try:
        return runs.watch(handle, on_progress, poll_s=0.5)
    except KeyboardInterrupt:
        _interrupt(handle)
        raise


def _interrupt(handle: runs.RunHandle) -> None:
    """Ctrl-C while watching: the run stops spending at once and ends `interrupted` (also in a cluster that would
    keep its actor alive after this command); a few seconds for it to record that, which a second Ctrl-C cuts short
    (the run then shows `interrupted` all the same, once its actor is gone)."""
    try:
        ray.get(handle.actor.cancel.remote(RunStatus.INTERRUPTED), timeout=5)
        ray.wait([handle.done], timeout=30)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        pass  # it ended already, or cannot answer


def _only(units: list[Unit], only: list[str] | None, keys: list[str] | None = None) -> list[Unit]:
    """The units of the chunks in `only` whose cache keys are in `keys` (None: no limit)."""
    chunks, wanted = set(only or ()), set(keys or ())
    return [u for u in units if (only is None or u.chunk_id in chunks) and (keys is None or u.cache_key in wanted)]


def _is_local(url: str) -> bool:
    host = url.split("://")[-1].split("/")[0].rsplit(":", 1)[0]
    return host in {"127.0.0.1", "localhost", "[::1]"}
