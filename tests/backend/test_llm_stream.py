"""Streamed requests against the fake server on 127.0.0.1 (no Ray): the answer and its billed tokens as without
streaming, a hung or stalled stream cancelled and retried with its slot given back at once, and an endpoint that
refuses `stream` asked without it."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from backend.llm_request import RequestPolicy, RetryingRequester, openai_complete
from backend.ratelimit import RateLimiter
from tests.fake_llm import Faults, FakeLLMServer, _text_of, _tokens, content_for

MESSAGES = [{"role": "system", "content": "You write samples."},
            {"role": "user", "content": "TASK: qa\nCOUNT: 2\n<<<CHUNK\n# Widgets\nA widget spins. It stops.\nCHUNK>>>"}]


def policy(**kw) -> RequestPolicy:
    return RequestPolicy(**{"model": "fake-model", "temperature": 0.0, "max_output_tokens": 500,
                            "expected_output_tokens": 100, "request_timeout_s": 30.0, "max_attempts": 3,
                            "backoff_base_s": 0.01, "backoff_max_s": 0.05, "price": {"input": 1.0, "output": 2.0},
                            "json_mode": True, "first_token_timeout_s": 1.0, "stall_timeout_s": 0.5} | kw)


class LimiterGate:
    """The run's gate without Ray: the real limiter, and the outcomes it was told."""

    def __init__(self):
        self.limiter = RateLimiter(rpm=6000, tpm=10**9, concurrency=4)
        self.outcomes: list[str] = []

    async def acquire(self, tokens, worst_cost):
        return await self.limiter.acquire(tokens)

    async def release(self, outcome, retry_after, worst_cost, cost, ticket):
        self.outcomes.append(outcome)
        await self.limiter.release(outcome, retry_after, ticket)


def ask(server: FakeLLMServer, p: RequestPolicy):
    gate = LimiterGate()
    requester = RetryingRequester(openai_complete(server.base_url, "k", p), gate, p)
    started = time.monotonic()
    result = asyncio.run(requester.request(MESSAGES, 50, json.loads))
    return result, gate, requester, time.monotonic() - started


@pytest.mark.parametrize("usage", [True, False], ids=["usage", "no-usage"])
def test_a_streamed_answer_is_the_whole_answer_and_is_billed(usage):
    with FakeLLMServer(stream_usage=usage) as server:
        (content, attempts, t_in, t_out, cost), *_ = ask(server, policy())
        assert server.stats()["streamed"] == 1
    assert content == content_for(MESSAGES) and [a["status"] for a in attempts] == ["ok"]
    assert t_in > 0 and t_out > 0 and cost > 0  # from the usage chunk, else estimated: the budget still holds
    if usage:
        assert (t_in, t_out) == _fake_usage(content)


def _fake_usage(content: str) -> tuple[int, int]:
    """The tokens the fake server bills (its own count), to compare with what the stream reported."""
    return sum(_tokens(_text_of(m["content"])) for m in MESSAGES), _tokens(content)


@pytest.mark.parametrize("fault", ["p_timeout", "p_stall"], ids=["no-first-token", "silent-mid-stream"])
def test_a_hung_stream_is_cancelled_and_retried_long_before_the_hang_ends(fault):
    with FakeLLMServer(faults=Faults(**{fault: 1.0}, hang_s=60)) as server:

        def heal():  # the next attempt finds a healthy server
            while server.stats()["requests"] < 1:
                time.sleep(0.01)
            server.set_faults(Faults())

        threading.Thread(target=heal, daemon=True).start()
        (content, attempts, *_), gate, _, elapsed = ask(server, policy())
    assert content == content_for(MESSAGES)
    assert [a["status"] for a in attempts] == ["stall", "ok"] and gate.outcomes == ["stall", "ok"]
    assert elapsed < 10  # the hang was 60 s: the stall timeout ended the attempt, not the hang
    assert gate.limiter.in_flight == 0


def test_an_endpoint_that_refuses_stream_is_asked_without_it_for_the_rest_of_the_worker():
    with FakeLLMServer(stream=False) as server:
        p = policy()
        gate = LimiterGate()
        requester = RetryingRequester(openai_complete(server.base_url, "k", p), gate, p)

        async def twice():
            return [await requester.request(MESSAGES, 50, json.loads) for _ in range(2)]

        results = asyncio.run(twice())
        stats = server.stats()
    assert [r[0] for r in results] == [content_for(MESSAGES)] * 2
    assert [a["status"] for a in results[0][1]] == ["stream_refused", "ok"] and requester.stream is False
    assert [a["status"] for a in results[1][1]] == ["ok"]  # remembered: no second refusal
    assert stats["http_400"] == 1 and stats["streamed"] == 0 and results[1][4] > 0


def test_once_answers_came_fast_a_hang_is_noticed_in_seconds_not_at_the_configured_ceiling():
    with FakeLLMServer() as server:
        p = policy(first_token_timeout_s=60.0)
        requester = RetryingRequester(openai_complete(server.base_url, "k", p), LimiterGate(), p)

        def heal():  # the hang is the second request; the third finds a healthy server
            while server.stats()["requests"] < 2:
                time.sleep(0.01)
            server.set_faults(Faults())

        async def scenario():
            await requester.request(MESSAGES, 50, json.loads)  # a first token in milliseconds
            server.set_faults(Faults(p_timeout=1.0, hang_s=120))
            threading.Thread(target=heal, daemon=True).start()
            started = time.monotonic()
            _, attempts, *_ = await requester.request(MESSAGES, 50, json.loads)
            return attempts, time.monotonic() - started

        attempts, elapsed = asyncio.run(scenario())
    assert [a["status"] for a in attempts] == ["stall", "ok"] and "within 5.0s" in attempts[0]["error"]
    assert elapsed < 15  # the floor (5 s), not the configured 60 s
