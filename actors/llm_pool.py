"""The LLM pool on Ray: one `Limiter` actor per run and async `GeneratorWorker` actors that send through it.

Synthesis (`actors/synth_run.py`), the judge at curation (`actors/curate_run.py`) and the pairwise judge at
evaluation (`actors/eval_run.py`) all get their workers from `generator_pool`, so every request of a run,
whatever it asks, shares one rate limit and one budget. The retry loop itself is `backend/llm_request.py`.
"""

from __future__ import annotations

import time

import ray

from backend.llm_request import (AuthFailed, BudgetExhausted, RequestFailed, RequestPolicy, RetryingRequester,
                                 openai_complete)
from backend.ratelimit import RateLimiter
from backend.endpoint_config import Secret
from backend.synth_config import SynthConfig
from backend.synthesize import (ParseError, Unit, build_samples, estimate_tokens, heuristic_response,
                                parse_judgement, parse_pairwise, parse_samples)

__all__ = ["AuthFailed", "BudgetExhausted", "GeneratorWorker", "Limiter", "generator_pool"]


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

    async def acquire(self, tokens: int, worst_cost: float) -> int | None:
        """The request's ticket, or None when its worst-case cost would take the run past its budget."""
        if self.max_cost is not None and self.spent + self.reserved + worst_cost > self.max_cost:
            return None
        self.reserved += worst_cost
        return await self.limiter.acquire(tokens)

    async def release(self, outcome: str, retry_after: float | None, worst_cost: float, cost: float,
                      ticket: int) -> None:
        self.reserved -= worst_cost
        self.spent += cost
        await self.limiter.release(outcome, retry_after, ticket)

    async def add_spent(self, cost: float) -> None:
        """Cost already paid in an earlier attempt of this run (resume)."""
        self.spent += cost

    async def snapshot(self) -> dict:
        return self.limiter.snapshot() | {"spent_usd": round(self.spent, 6), "reserved_usd": round(self.reserved, 6)}

    async def timeline_point(self) -> list[tuple[int, str, float]]:
        """The limiter now, as metric rows (step: Unix seconds, so a resumed run's points follow its earlier ones):
        answers so far by outcome and stalls (counts, so a point lost loses no answer), the in-flight cap, requests
        in flight, the rate in requests per minute."""
        snap, step = self.limiter.snapshot(), int(time.time())
        return [(step, f"limiter/{k}", snap[k]) for k in ("ok", "rate_limited", "errors", "stalls")] + [
            (step, "limiter/cap", snap["limit"]), (step, "limiter/in_flight", snap["in_flight"]),
            (step, "limiter/rate_rpm", snap["rate_per_window"] * 60 / self.limiter.window_s)]


class _LimiterGate:
    """The `Gate` of `backend.llm_request` over the shared `Limiter` actor."""

    def __init__(self, limiter):
        self.limiter = limiter

    async def acquire(self, tokens: int, worst_cost: float) -> int | None:
        return await self.limiter.acquire.remote(tokens, worst_cost)

    async def release(self, outcome: str, retry_after: float | None, worst_cost: float, cost: float,
                      ticket: int) -> None:
        await self.limiter.release.remote(outcome, retry_after, worst_cost, cost, ticket)


def _estimate(messages: list[dict]) -> int:
    return sum(estimate_tokens(m["content"]) for m in messages)


@ray.remote(num_cpus=0)
class GeneratorWorker:
    """Sends requests through the shared limiter, with retries; returns results, stores nothing.

    Three verbs, one per caller: `run_unit` (synthesis), `judge` (curation), `pairwise` (evaluation)."""

    def __init__(self, cfg: dict, key: Secret, limiter, project: str, run_id: str):
        self.cfg = SynthConfig.from_dict(cfg)
        self.project = project
        self.run_id = run_id
        self.requester = None
        if self.cfg.generator == "openai":
            policy = RequestPolicy.from_config(self.cfg)
            self.requester = RetryingRequester(openai_complete(self.cfg.endpoint.base_url, key.reveal(), policy),
                                               _LimiterGate(limiter), policy)

    async def run_unit(self, unit: dict) -> dict:
        """Samples for one unit, or a dead letter; with every attempt's log row."""
        u = Unit(**unit)
        if self.cfg.generator == "heuristic":
            return self._result(u, heuristic_response(u, self.cfg.samples_per_request), [], 0, 0, 0.0)
        try:
            content, attempts, t_in, t_out, cost = await self.requester.request(u.messages, u.est_tokens_in,
                                                                                parse_samples)
        except RequestFailed as failed:
            return {"cache_key": u.cache_key, "status": "dead", "reason": failed.reason, "detail": failed.detail,
                    "attempts": failed.attempts, "samples": [], "response": None, "unit": unit}
        return self._result(u, content, attempts, t_in, t_out, cost)

    async def judge(self, sample_id: str, messages: list[dict], key: str) -> dict:
        """Score one sample 1-10 (messages from `render_judge_messages`); the response is cached like any."""
        try:
            content, attempts, t_in, t_out, cost = await self.requester.request(messages, _estimate(messages),
                                                                                parse_judgement)
        except RequestFailed as failed:
            return {"sample_id": sample_id, "score": None, "reason": f"{failed.reason}: {failed.detail}",
                    "cache_key": key, "attempts": failed.attempts, "response": None}
        score, reason = parse_judgement(content)
        return {"sample_id": sample_id, "score": score, "reason": reason, "cache_key": key, "attempts": attempts,
                "response": self._response(key, content, t_in, t_out, cost)}

    async def pairwise(self, key: str, messages: list[dict]) -> dict:
        """Which of two answers is better (messages from `render_pairwise_messages`)."""
        try:
            content, attempts, t_in, t_out, cost = await self.requester.request(messages, _estimate(messages),
                                                                                parse_pairwise)
        except RequestFailed as failed:
            return {"cache_key": key, "winner": None, "reason": f"{failed.reason}: {failed.detail}",
                    "attempts": failed.attempts, "response": None}
        winner, reason = parse_pairwise(content)
        return {"cache_key": key, "winner": winner, "reason": reason, "attempts": attempts,
                "response": self._response(key, content, t_in, t_out, cost)}

    def _response(self, key: str, content: str, t_in: int, t_out: int, cost: float) -> dict:
        """A paid response, as the store's response cache keeps it."""
        return {"cache_key": key, "model": self.cfg.model_name(), "content": content, "tokens_in": t_in,
                "tokens_out": t_out, "cost_usd": cost}

    def _result(self, u: Unit, content: str, attempts: list[dict], t_in: int, t_out: int, cost: float) -> dict:
        try:
            items = parse_samples(content)
        except ParseError as exc:  # the heuristic found nothing to say about this chunk
            return {"cache_key": u.cache_key, "status": "dead", "reason": "no_samples", "detail": str(exc),
                    "attempts": attempts, "samples": [], "response": None, "unit": u.as_dict()}
        samples = build_samples(u, items, project=self.project, run_id=self.run_id,
                                generator=self.cfg.model_name(), language=self.cfg.language)
        # only paid responses are cached; the heuristic is recomputed (and may change between versions)
        response = None if self.cfg.generator == "heuristic" else self._response(u.cache_key, content, t_in,
                                                                                  t_out, cost)
        return {"cache_key": u.cache_key, "status": "ok", "samples": samples, "attempts": attempts,
                "unit": u.as_dict(), "response": response}


def generator_pool(cfg: SynthConfig, key: Secret, project: str, run_id: str) -> tuple:
    """(limiter, generator actors) for one run: every request of the run goes through that one limiter."""
    endpoint = cfg.endpoint
    limiter = Limiter.remote(endpoint.rpm, endpoint.tpm, endpoint.concurrency, endpoint.rate_window_s,
                             cfg.max_cost_usd)
    workers = [GeneratorWorker.options(max_concurrency=max(2, endpoint.concurrency)).remote(
        cfg.to_dict(), key, limiter, project, run_id) for _ in range(endpoint.workers)]
    return limiter, workers
