"""The synthesis run: an async orchestrator actor, async generator actors and one shared limiter actor.

    SynthRun ──units──▶ GeneratorWorker × N ──acquire/release──▶ Limiter (RPM, TPM, in-flight cap, budget)
        │                     └── OpenAI-compatible HTTP (or the offline heuristic)
        └── every result ──▶ store actor (response cache, request log, samples, dead letters)

Crash safety: a response is written to the store as soon as it arrives, before its unit counts as done.
A rerun of the same config resumes the same run: units with samples or a dead letter are skipped, and
units whose response is cached are parsed again without a request. So a `kill -9` costs at most the
requests that were in flight.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque

import ray

from backend.ratelimit import RateLimiter
from backend.endpoint_config import Secret
from backend.synth_config import SynthConfig
from backend.synthesize import (ParseError, Unit, build_samples, cost_usd, estimate_tokens,
                                expected_output_tokens, heuristic_response, parse_judgement, parse_pairwise,
                                parse_samples, plan_units)


@ray.remote(num_cpus=0)
class Limiter:
    """The run's one rate limiter and budget, shared by every generator actor."""

    def __init__(self, rpm: int, tpm: int, concurrency: int, window_s: float, max_cost_usd: float | None):
        per_window = window_s / 60.0
        self.limiter = RateLimiter(max(1, round(rpm * per_window)), max(1, round(tpm * per_window)), concurrency,
                                   window_s=window_s)
        self.max_cost = max_cost_usd
        self.spent = 0.0
        self.reserved = 0.0

    async def acquire(self, tokens: int, worst_cost: float) -> bool:
        """False when the request's worst-case cost would take the run past its budget."""
        if self.max_cost is not None and self.spent + self.reserved + worst_cost > self.max_cost:
            return False
        self.reserved += worst_cost
        await self.limiter.acquire(tokens)
        return True

    async def release(self, outcome: str, retry_after: float | None, worst_cost: float, cost: float) -> None:
        self.reserved -= worst_cost
        self.spent += cost
        await self.limiter.release(outcome, retry_after)

    async def add_spent(self, cost: float) -> None:
        """Cost already paid in an earlier attempt of this run (resume)."""
        self.spent += cost

    async def snapshot(self) -> dict:
        return self.limiter.snapshot() | {"spent_usd": round(self.spent, 6), "reserved_usd": round(self.reserved, 6)}


class BudgetExhausted(Exception):
    pass


class AuthFailed(Exception):
    pass


class RequestFailed(Exception):
    def __init__(self, reason: str, detail: str, attempts: list[dict]):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.attempts = reason, detail, attempts


def _attempt(status: str, http_status: int | None, tokens_in: int, tokens_out: int, cost: float,
             latency_ms: float, error: str | None) -> dict:
    """One HTTP attempt, as logged in `api_requests` (never with the key)."""
    return {"status": status, "http_status": http_status, "tokens_in": tokens_in, "tokens_out": tokens_out,
            "cost_usd": cost, "latency_ms": round(latency_ms, 1), "error": error[:500] if error else None}


def _retry_after(exc) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


@ray.remote(num_cpus=0)
class GeneratorWorker:
    """Sends requests for units through the shared limiter, with retries; returns results, stores nothing."""

    def __init__(self, cfg: dict, key: Secret, limiter, project: str, run_id: str):
        self.cfg = SynthConfig.from_dict(cfg)
        self.limiter = limiter
        self.project = project
        self.run_id = run_id
        self.price = self.cfg.price()
        self.endpoint = self.cfg.endpoint
        self.json_mode = self.endpoint.json_mode
        self.client = None
        if self.cfg.generator == "openai":
            from openai import AsyncOpenAI

            self.client = AsyncOpenAI(base_url=self.endpoint.base_url, api_key=key.reveal() or "no-key",
                                      max_retries=0, timeout=self.endpoint.request_timeout_s)

    async def run_unit(self, unit: dict) -> dict:
        """Samples for one unit, or a dead letter; with every attempt's log row."""
        u = Unit(**unit)
        if self.cfg.generator == "heuristic":
            return self._result(u, heuristic_response(u, self.cfg.samples_per_request), [], 0, 0, 0.0)
        try:
            content, attempts, t_in, t_out, cost = await self.request(u.messages, u.est_tokens_in, parse_samples)
        except RequestFailed as failed:
            return {"cache_key": u.cache_key, "status": "dead", "reason": failed.reason, "detail": failed.detail,
                    "attempts": failed.attempts, "samples": [], "response": None, "unit": unit}
        return self._result(u, content, attempts, t_in, t_out, cost)

    async def judge(self, sample_id: str, messages: list[dict], key: str) -> dict:
        """Score one sample 1-10 (messages from `render_judge_messages`); the response is cached like any."""
        try:
            content, attempts, t_in, t_out, cost = await self.request(
                messages, sum(estimate_tokens(m["content"]) for m in messages), parse_judgement)
        except RequestFailed as failed:
            return {"sample_id": sample_id, "score": None, "reason": f"{failed.reason}: {failed.detail}",
                    "cache_key": key, "attempts": failed.attempts, "response": None}
        score, reason = parse_judgement(content)
        return {"sample_id": sample_id, "score": score, "reason": reason, "cache_key": key, "attempts": attempts,
                "response": {"cache_key": key, "model": self.endpoint.model, "content": content, "tokens_in": t_in,
                             "tokens_out": t_out, "cost_usd": cost}}

    async def pairwise(self, key: str, messages: list[dict]) -> dict:
        """Which of two answers is better (messages from `render_pairwise_messages`)."""
        try:
            content, attempts, t_in, t_out, cost = await self.request(
                messages, sum(estimate_tokens(m["content"]) for m in messages), parse_pairwise)
        except RequestFailed as failed:
            return {"cache_key": key, "winner": None, "reason": f"{failed.reason}: {failed.detail}",
                    "attempts": failed.attempts, "response": None}
        winner, reason = parse_pairwise(content)
        return {"cache_key": key, "winner": winner, "reason": reason, "attempts": attempts,
                "response": {"cache_key": key, "model": self.endpoint.model, "content": content, "tokens_in": t_in,
                             "tokens_out": t_out, "cost_usd": cost}}

    async def request(self, messages: list[dict], est_tokens_in: int, parse) -> tuple:
        """One logical request through the limiter, retried until `parse(content)` accepts an answer.

        Returns (content, attempt log rows, tokens in, tokens out, cost) of the accepted attempt.

        Raises:
            RequestFailed: attempts exhausted, or a 4xx that repeating cannot fix (with the log rows).
            BudgetExhausted: the next attempt could take the run past --max-cost.
            AuthFailed: the endpoint refused the key (the whole run stops).
        """
        attempts: list[dict] = []
        failures, throttled = 0, 0
        last = ("http_5xx", "")
        while failures < self.endpoint.max_attempts and throttled < 20 * self.endpoint.max_attempts:
            worst = cost_usd(est_tokens_in, self.cfg.max_output_tokens, self.price)
            if not await self.limiter.acquire.remote(est_tokens_in + expected_output_tokens(self.cfg), worst):
                raise BudgetExhausted()
            outcome, retry_after, cost = "error", None, 0.0
            started = time.monotonic()
            try:
                response = await self._complete(messages)
                usage = response.usage
                t_in, t_out = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
                cost = cost_usd(t_in, t_out, self.price)
                content = response.choices[0].message.content or ""
                outcome = "ok"
                latency = (time.monotonic() - started) * 1000
                try:
                    parse(content)
                except ParseError as exc:  # paid for, but unusable: logged with its cost, then asked again
                    failures += 1
                    last = ("parse_error", str(exc))
                    attempts.append(_attempt("parse_error", 200, t_in, t_out, cost, latency, str(exc)))
                    continue
                attempts.append(_attempt("ok", 200, t_in, t_out, cost, latency, None))
                return content, attempts, t_in, t_out, cost
            except Exception as exc:  # classified below; anything unknown is a failed attempt
                status, http, detail = self._classify(exc)
                attempts.append(_attempt(status, http, 0, 0, 0.0, (time.monotonic() - started) * 1000, detail))
                if status == "http_429":
                    outcome, retry_after = "rate_limited", _retry_after(exc)
                    throttled += 1
                    continue
                if status in {"http_401", "http_403"}:
                    raise AuthFailed(f"the endpoint refused the key ({http}): {detail[:200]}") from None
                if status == "json_mode_refused":
                    self.json_mode = False  # the endpoint has no JSON mode: ask in words only
                    continue
                failures += 1
                last = (status, detail)
                if status == "http_4xx":
                    break  # the request itself is wrong; repeating it cannot help
                await asyncio.sleep(self._backoff(failures))
            finally:
                await self.limiter.release.remote(outcome, retry_after, worst, cost)
        raise RequestFailed(last[0], last[1][:1000], attempts)

    async def _complete(self, messages: list[dict]):
        kwargs = dict(model=self.endpoint.model, messages=messages, temperature=self.cfg.temperature,
                      max_tokens=self.cfg.max_output_tokens)
        if self.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        return await self.client.chat.completions.create(**kwargs)

    def _classify(self, exc) -> tuple[str, int | None, str]:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return "timeout", None, f"no answer within {self.endpoint.request_timeout_s}s"
        if isinstance(exc, openai.APIConnectionError):
            return "connection", None, str(exc)
        if isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            if code == 429:
                return "http_429", code, str(exc)
            if code in (401, 403):
                return f"http_{code}", code, str(exc)
            if code >= 500:
                return "http_5xx", code, str(exc)
            if code == 400 and self.json_mode and "response_format" in str(exc):
                return "json_mode_refused", code, str(exc)
            return "http_4xx", code, str(exc)
        return "error", None, f"{type(exc).__name__}: {exc}"

    def _backoff(self, failures: int) -> float:
        """Exponential with full jitter: spreads retries so they do not arrive together."""
        endpoint = self.endpoint
        return random.uniform(0.5, 1.0) * min(endpoint.backoff_max_s, endpoint.backoff_base_s * 2 ** (failures - 1))

    def _result(self, u: Unit, content: str, attempts: list[dict], t_in: int, t_out: int, cost: float) -> dict:
        try:
            items = parse_samples(content)
        except ParseError as exc:  # the heuristic found nothing to say about this chunk
            return {"cache_key": u.cache_key, "status": "dead", "reason": "no_samples", "detail": str(exc),
                    "attempts": attempts, "samples": [], "response": None, "unit": u.as_dict()}
        samples = build_samples(u, items, project=self.project, run_id=self.run_id,
                                generator=self.cfg.model_name(), language=self.cfg.language)
        # only paid responses are cached; the heuristic is recomputed (and may change between versions)
        response = None if self.cfg.generator == "heuristic" else {
            "cache_key": u.cache_key, "model": self.cfg.model_name(), "content": content, "tokens_in": t_in,
            "tokens_out": t_out, "cost_usd": cost}
        return {"cache_key": u.cache_key, "status": "ok", "samples": samples, "attempts": attempts,
                "unit": u.as_dict(), "response": response}


def generator_pool(cfg: SynthConfig, key: Secret, project: str, run_id: str) -> tuple:
    """(limiter, generator actors) for one run: every request of the run goes through that one limiter."""
    endpoint = cfg.endpoint
    limiter = Limiter.remote(endpoint.rpm, endpoint.tpm, endpoint.concurrency, endpoint.rate_window_s, cfg.max_cost_usd)
    workers = [GeneratorWorker.options(max_concurrency=max(2, endpoint.concurrency)).remote(
        cfg.to_dict(), key, limiter, project, run_id) for _ in range(endpoint.workers)]
    return limiter, workers


@ray.remote(num_cpus=0)
class SynthRun:
    """Orchestrates one synthesis run; outlives the command that started it (named `synth-<run id>`)."""

    def __init__(self, home: str, run_id: str, project: str, cfg: dict, key: Secret, retry_failed: bool):
        from pathlib import Path

        from actors.store_actor import StoreClient

        self.store = StoreClient(Path(home))
        self.run_id, self.project, self.cfg_dict = run_id, project, cfg
        self.cfg = SynthConfig.from_dict(cfg)
        self.key = key
        self.retry_failed = retry_failed
        self.counts = {"units": 0, "done": 0, "cached": 0, "skipped": 0, "failed": 0, "samples": 0,
                       "requests": 0, "http_429": 0, "errors": 0, "tokens_in": 0, "tokens_out": 0,
                       "cost_usd": 0.0}
        self.request_times: deque[float] = deque()
        self.status = "starting"
        self.error: str | None = None
        self.task: asyncio.Task | None = None
        self.cancelled = False
        self.limiter = None

    async def start(self) -> str:
        self.task = asyncio.get_running_loop().create_task(self._main())
        return self.run_id

    async def wait(self) -> dict:
        await self.task
        return await self.progress()

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

    async def _call(self, verb: str, *args):
        return await self.store.submit(verb, *args)

    async def _main(self) -> None:
        try:
            self.status = "running"
            await self._run()
            if self.status == "running":
                self.status = "succeeded"
        except BudgetExhausted:
            self.status = "budget_stopped"
        except AuthFailed as exc:
            self.status, self.error = "failed", str(exc)
        except Exception as exc:  # recorded on the run; the rerun resumes
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            try:
                await self._writer_drain()
                usage = await self._call("run_usage", self.run_id)
                summary = dict(self.counts, **{k: usage[k] for k in ("samples", "dead_letters", "cost_usd")})
                await self._call("finish_run", self.run_id, self.status, summary, self.error)
            except Exception as exc:  # the store is gone too: nothing more to record
                self.error = self.error or f"could not record the end of the run: {exc}"

    async def _run(self) -> None:
        cfg = self.cfg
        chunks = (await self._call("chunks", self.project)).to_pylist()
        units = plan_units(chunks, cfg, self.project)
        finished = await self._call("finished_units", self.run_id)
        if self.retry_failed:
            todo = [u for u in units if finished.get(u.cache_key) == "dead"]
        else:
            todo = [u for u in units if u.cache_key not in finished]
        self.counts["units"] = len(units)
        self.counts["skipped"] = len(units) - len(todo)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.writer = asyncio.get_running_loop().create_task(self._writer())
        cached = await self._call("cached_responses", [u.cache_key for u in todo])
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
        spent = (await self._call("run_usage", self.run_id))["cost_usd"]
        self.limiter, workers = generator_pool(cfg, self.key, self.project, self.run_id)
        await self.limiter.add_spent.remote(spent)
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
            self.status = "cancelled"

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
        await self._call("record_synth_batch", self.run_id, responses, requests, samples, dead, retried)


def start_synth_run(client, project: str, cfg: SynthConfig, *, retry_failed: bool, new_run: bool, dry_run: bool,
                    on_progress=None, curate_cfg=None, wait: bool = True) -> dict:
    """The driver's side of a run: plan, estimate, create or resume the run, start its actor and watch it.

    Without `wait`, a detached `SynthDriver` actor watches and curates instead, and this returns at once:
    the run outlives the page or command that started it."""
    import uuid

    from backend.endpoint_config import api_key
    from backend.synthesize import estimate_run

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
        run_id = f"synth-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        config = cfg.to_dict() | {"fingerprint": fingerprint}
        store.create_run(run_id, "synth", project, config)
    else:
        store.set_run_status(run_id, "running")
    # the plan, for live progress (the run's final summary replaces it)
    store.update_run(run_id, summary={"units": len(units), "todo": len(todo), "estimate": estimate})
    plan["run_id"] = run_id
    if not wait:
        driver = SynthDriver.options(name=f"synth-driver-{run_id}", lifetime="detached").remote()
        ray.get(driver.drive.remote(str(client.home), run_id, project, cfg, Secret(api_key()), retry_failed, plan,
                                    curate_cfg, started=False))
        return {**plan, "status": "running", "detached": True}
    return _drive_synth_run(client, run_id, project, cfg, Secret(api_key()), retry_failed, plan, on_progress,
                            curate_cfg)


def _drive_synth_run(client, run_id: str, project: str, cfg: SynthConfig, key: Secret, retry_failed: bool,
                     plan: dict, on_progress=None, curate_cfg=None) -> dict:
    """Start the run's actor, watch it to the end, then curate its samples into a dataset version."""
    store = client.store
    actor = SynthRun.options(name=f"synth-{run_id}", lifetime="detached", max_concurrency=64).remote(
        str(client.home), run_id, project, cfg.to_dict(), key, retry_failed)
    ray.get(actor.start.remote())
    done_ref = actor.wait.remote()
    while True:
        ready, _ = ray.wait([done_ref], timeout=0.5)
        if on_progress:
            on_progress(ray.get(actor.progress.remote()))
        if ready:
            break
    final = ray.get(done_ref)
    ray.kill(actor)
    summary = {**plan, "run_id": run_id, **{k: final[k] for k in (
        "status", "error", "done", "cached", "failed", "samples", "requests", "http_429", "tokens_in", "tokens_out",
        "cost_usd")}}
    dead = store.dead_letters(project, run_id)
    summary["dead_letters"] = len(dead)
    summary["dead_reasons"] = dict(sorted(Counter(d["reason"] for d in dead).items()))
    if final["status"] in {"succeeded", "budget_stopped"} and store.run_usage(run_id)["samples"]:
        from actors.curate_run import curate_runs

        summary["dataset"] = curate_runs(client, project, [run_id], curate_cfg)
        # on the run too, so a page that did not wait for it can show where its samples went
        store.update_run(run_id, summary=store.run(run_id)["summary"] | {"dataset": summary["dataset"]})
    return summary


@ray.remote(num_cpus=0, max_concurrency=2)
class SynthDriver:
    """Watches a synthesis run to its end and curates it, for callers that do not wait (the dashboard)."""

    def drive(self, home: str, run_id: str, project: str, cfg: SynthConfig, key: Secret, retry_failed: bool,
              plan: dict, curate_cfg, started: bool = True) -> dict | None:
        import threading

        if not started:  # answer the caller at once, then do the work on a thread of this actor
            threading.Thread(target=self.drive, args=(home, run_id, project, cfg, key, retry_failed, plan,
                                                      curate_cfg), daemon=True).start()
            return None
        from pathlib import Path
        from types import SimpleNamespace

        from actors.store_actor import StoreClient

        context = SimpleNamespace(home=Path(home), store=StoreClient(Path(home)))
        try:
            return _drive_synth_run(context, run_id, project, cfg, key, retry_failed, plan, None, curate_cfg)
        finally:
            threading.Timer(1.0, ray.kill, args=(ray.get_runtime_context().current_actor,)).start()


def _is_local(url: str) -> bool:
    host = url.split("://")[-1].split("/")[0].rsplit(":", 1)[0]
    return host in {"127.0.0.1", "localhost", "[::1]"}
