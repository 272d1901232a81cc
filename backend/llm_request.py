"""One logical request to an OpenAI-compatible chat endpoint: admit → send → classify → back off → retry.

Pure asyncio and no Ray: the chat call and the gate (rate limit and budget) are passed in, so the loop is
tested with a fake client and a local gate, and runs unchanged inside the pool's actors
(`actors/llm_pool.py`), where the gate is the run's shared `Limiter` actor.

    RetryingRequester.request(messages, est_tokens_in, parse)
        gate.acquire(tokens, worst cost) ──▶ complete(messages, json_mode, stream) ──▶ parse(content)
              │ refused: BudgetExhausted          │ error: classify → 429 waits its Retry-After (not counted),
              └ gate.release(outcome, retry_after, worst, cost, ticket)                  401/403 stop,
                after every attempt, before any wait    4xx gives up, others (a stall too) back off and count

Answers are streamed: a request that sends no token for `first_token_timeout_s`, or stops for `stall_timeout_s`
between two chunks, is closed (which stops generation at most providers) and retried, its slot freed at once;
an endpoint that refuses `stream` is asked without it for the rest of the worker.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import openai

from backend.synthesize import ParseError, cost_usd, estimate_tokens, expected_output_tokens


class BudgetExhausted(Exception):
    """The next attempt could take the run past its cost cap (`max_cost_usd`)."""


class AuthFailed(Exception):
    """The endpoint refused the key: every later request would be refused too, so the whole run stops."""


class RequestFailed(Exception):
    """Attempts exhausted, or a 4xx that repeating cannot fix; carries every attempt's log row."""

    def __init__(self, reason: str, detail: str, attempts: list[dict]):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.attempts = reason, detail, attempts


class Stalled(Exception):
    """The stream sent nothing for too long: the attempt is closed and retried."""


class Gate(Protocol):
    """Admission before each attempt and its outcome after (the rate limiter and the budget)."""

    async def acquire(self, tokens: int, worst_cost: float) -> int | None:
        """The attempt's ticket (for `release`), or None when its worst case would pass the budget."""

    async def release(self, outcome: str, retry_after: float | None, worst_cost: float, cost: float,
                      ticket: int) -> None: ...


@dataclass(frozen=True)
class RequestPolicy:
    """What one request may send and how hard it retries (from the endpoint's config)."""

    model: str
    temperature: float
    max_output_tokens: int
    expected_output_tokens: int
    """Tokens the limiter reserves for the answer (not the cap: most answers are far shorter)."""
    request_timeout_s: float
    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float
    price: dict[str, float] | None
    json_mode: bool
    stream: bool = True
    first_token_timeout_s: float = 60.0
    stall_timeout_s: float = 30.0

    @classmethod
    def from_config(cls, cfg) -> "RequestPolicy":
        """The policy of a synthesis/judge config (`SynthConfig`): its endpoint's limits, its generation settings."""
        e = cfg.endpoint
        return cls(model=e.model, temperature=cfg.temperature, max_output_tokens=cfg.max_output_tokens,
                   expected_output_tokens=expected_output_tokens(cfg), request_timeout_s=e.request_timeout_s,
                   max_attempts=e.max_attempts, backoff_base_s=e.backoff_base_s, backoff_max_s=e.backoff_max_s,
                   price=cfg.price(), json_mode=e.json_mode, stream=e.stream,
                   first_token_timeout_s=e.first_token_timeout_s, stall_timeout_s=e.stall_timeout_s)


@dataclass(frozen=True)
class Answer:
    """One answered attempt: its text and the tokens it was billed (estimated where the endpoint did not say)."""

    content: str
    tokens_in: int
    tokens_out: int


Complete = Callable[..., Awaitable[Answer]]
"""`complete(messages, json_mode=..., stream=...)` → the `Answer` (raises what the `openai` client raises, or
`Stalled`)."""


def attempt_row(status: str, http_status: int | None, tokens_in: int, tokens_out: int, cost: float,
                latency_ms: float, error: str | None) -> dict:
    """One HTTP attempt, as logged in `api_requests` (never with the key)."""
    return {"status": status, "http_status": http_status, "tokens_in": tokens_in, "tokens_out": tokens_out,
            "cost_usd": cost, "latency_ms": round(latency_ms, 1), "error": error[:500] if error else None}


def retry_after_s(exc: BaseException) -> float | None:
    """The `Retry-After` header of an HTTP error, in seconds, when it has one."""
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def classify(exc: BaseException, json_mode: bool, timeout_s: float,
             stream: bool = False) -> tuple[str, int | None, str]:
    """(status for the request log, HTTP status, detail) of a failed attempt."""
    if isinstance(exc, Stalled):
        return "stall", None, str(exc)
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", None, f"no answer within {timeout_s}s"
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
        if code == 400 and json_mode and "response_format" in str(exc):
            return "json_mode_refused", code, str(exc)
        if code == 400 and stream and "stream_options" in str(exc):
            return "stream_options_refused", code, str(exc)
        if code == 400 and stream and "stream" in str(exc):
            return "stream_refused", code, str(exc)
        return "http_4xx", code, str(exc)
    return "error", None, f"{type(exc).__name__}: {exc}"


def backoff_s(failures: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential with full jitter: spreads retries so they do not arrive together."""
    return (rng or random).uniform(0.5, 1.0) * min(max_s, base_s * 2 ** (failures - 1))


class RetryingRequester:
    """Sends logical requests through a gate with retries; one per worker (it remembers a refused JSON mode and a
    refused stream).

    Args:
        complete: the chat call (`openai_complete`'s, or a fake in tests).
        gate: rate limit and budget, asked before and told after every attempt.
        policy: model, sampling, retries and price.
        sleep: how to wait between attempts (tests pass a recorder).
    """

    def __init__(self, complete: Complete, gate: Gate, policy: RequestPolicy,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.complete = complete
        self.gate = gate
        self.policy = policy
        self.json_mode = policy.json_mode
        self.stream = policy.stream
        self.sleep = sleep

    async def request(self, messages: list[dict], est_tokens_in: int, parse: Callable[[str], Any]) -> tuple:
        """One logical request, retried until `parse(content)` accepts an answer.

        Returns (content, attempt log rows, tokens in, tokens out, cost) of the accepted attempt.

        Raises:
            RequestFailed: attempts exhausted, or a 4xx that repeating cannot fix (with the log rows).
            BudgetExhausted: the next attempt could take the run past its cost cap.
            AuthFailed: the endpoint refused the key (the whole run stops).
        """
        p = self.policy
        attempts: list[dict] = []
        failures, throttled = 0, 0
        last = ("http_5xx", "")
        # a 429 is waited out without counting as a failure, but not forever
        while failures < p.max_attempts and throttled < 20 * p.max_attempts:
            worst = cost_usd(est_tokens_in, p.max_output_tokens, p.price)
            ticket = await self.gate.acquire(est_tokens_in + p.expected_output_tokens, worst)
            if ticket is None:
                raise BudgetExhausted()
            outcome, retry_after, cost, wait = "error", None, 0.0, 0.0
            started = time.monotonic()
            try:
                answer = await self.complete(messages, json_mode=self.json_mode, stream=self.stream)
                t_in, t_out = answer.tokens_in, answer.tokens_out
                cost = cost_usd(t_in, t_out, p.price)
                outcome = "ok"
                latency = (time.monotonic() - started) * 1000
                try:
                    parse(answer.content)
                except ParseError as exc:  # paid for, but unusable: logged with its cost, then asked again
                    failures += 1
                    last = ("parse_error", str(exc))
                    attempts.append(attempt_row("parse_error", 200, t_in, t_out, cost, latency, str(exc)))
                    continue
                attempts.append(attempt_row("ok", 200, t_in, t_out, cost, latency, None))
                return answer.content, attempts, t_in, t_out, cost
            except Exception as exc:  # classified below; anything unknown is a failed attempt
                status, http, detail = classify(exc, self.json_mode, p.request_timeout_s, self.stream)
                attempts.append(attempt_row(status, http, 0, 0, 0.0, (time.monotonic() - started) * 1000, detail))
                if status == "http_429":
                    # this request waits out its Retry-After, outside the limiter: the limiter decides whether
                    # everyone should (backend/ratelimit.py)
                    outcome, retry_after = "rate_limited", retry_after_s(exc)
                    throttled += 1
                    wait = min(p.backoff_max_s, retry_after if retry_after is not None else p.backoff_base_s)
                    continue
                if status in {"http_401", "http_403"}:
                    raise AuthFailed(f"the endpoint refused the key ({http}): {detail[:200]}") from None
                if status == "json_mode_refused":
                    self.json_mode = False  # the endpoint has no JSON mode: ask in words only
                    continue
                if status in {"stream_refused", "stream_options_refused"}:
                    self.stream = False  # ask for the whole answer at once; stalls end at request_timeout_s
                    continue
                outcome = "stall" if status == "stall" else "error"
                failures += 1
                last = (status, detail)
                if status == "http_4xx":
                    break  # the request itself is wrong; repeating it cannot help
                wait = backoff_s(failures, p.backoff_base_s, p.backoff_max_s)
            finally:
                # released before any wait, so a waiting or stalled request never holds a slot
                await self.gate.release(outcome, retry_after, worst, cost, ticket)
                if wait:
                    await self.sleep(wait)
        raise RequestFailed(last[0], last[1][:1000], attempts)


FIRST_TOKEN_RTTS = 10.0
FIRST_TOKEN_FLOOR_S = 5.0
"""Once answers have come, a first token is awaited this many times their average wait for it, at least this many
seconds (and never longer than `first_token_timeout_s`): as TCP times out from its measured round trip, a hung
request is noticed in seconds where answers start in a fraction of one."""


def openai_complete(base_url: str, key: str | None, policy: RequestPolicy) -> Complete:
    """The chat call of a real endpoint: the `openai` client with its own retries off (ours are above).

    Streamed, it asks for the usage in the last chunk (`stream_options`); an endpoint that leaves it out is
    billed by estimate, so the budget still holds."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key or "no-key", max_retries=0,
                                timeout=policy.request_timeout_s)
    first_token_s: list[float] = []  # moving average of the wait for a first token, once there is one

    async def complete(messages: list[dict], json_mode: bool, stream: bool) -> Answer:
        kwargs = dict(model=policy.model, messages=messages, temperature=policy.temperature,
                      max_tokens=policy.max_output_tokens)
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        if not stream:
            response = await client.chat.completions.create(**kwargs)
            usage = response.usage
            return Answer(response.choices[0].message.content or "", *(
                (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)))
        timeout = policy.first_token_timeout_s
        if first_token_s:
            timeout = min(timeout, max(FIRST_TOKEN_FLOOR_S, FIRST_TOKEN_RTTS * first_token_s[0]))
        answer, waited = await _streamed(client, kwargs, messages, policy, timeout)
        first_token_s[:] = [waited if not first_token_s else first_token_s[0] + 0.1 * (waited - first_token_s[0])]
        return answer

    return complete


async def _streamed(client: openai.AsyncOpenAI, kwargs: dict, messages: list[dict], policy: RequestPolicy,
                    first_token_timeout_s: float) -> tuple[Answer, float]:
    """One streamed answer and the seconds its first chunk took; `Stalled` (the stream closed) when a chunk is
    late."""
    started = time.monotonic()
    deadline = started + first_token_timeout_s
    try:
        stream = await asyncio.wait_for(client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}), first_token_timeout_s)
    except asyncio.TimeoutError:
        raise Stalled(f"no first token within {first_token_timeout_s:.1f}s") from None
    parts: list[str] = []
    usage, first = None, None
    chunks = aiter(stream)
    try:
        while True:
            limit = deadline - time.monotonic() if first is None else policy.stall_timeout_s
            try:
                chunk = await asyncio.wait_for(anext(chunks), max(0.0, limit))
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise Stalled(f"no first token within {first_token_timeout_s:.1f}s" if first is None
                              else f"no token for {policy.stall_timeout_s}s") from None
            if first is None:  # any chunk is a sign of life, a reasoning model's thinking (no content yet) too
                first = time.monotonic() - started
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
    finally:
        await stream.close()  # closing the connection stops generation at most providers
    content = "".join(parts)
    waited = first if first is not None else time.monotonic() - started
    if usage is not None:
        return Answer(content, usage.prompt_tokens, usage.completion_tokens), waited
    return Answer(content, sum(estimate_tokens(m["content"]) for m in messages), estimate_tokens(content)), waited
