"""The request loop without Ray or HTTP: a fake chat call that fails on cue, and a local gate that records."""

from __future__ import annotations

import asyncio
import httpx
import openai
import pytest

from backend.llm_request import (Answer, AuthFailed, BudgetExhausted, RequestFailed, RequestPolicy, RetryingRequester,
                                 Stalled, backoff_s, classify)
from backend.synthesize import ParseError

REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
POLICY = RequestPolicy(model="m", temperature=0.0, max_output_tokens=100, expected_output_tokens=50,
                       request_timeout_s=5.0, max_attempts=3, backoff_base_s=1.0, backoff_max_s=4.0,
                       price={"input": 1.0, "output": 2.0}, json_mode=True)


def http_error(code: int, message: str = "boom", retry_after: str | None = None) -> openai.APIStatusError:
    headers = {"retry-after": retry_after} if retry_after else {}
    response = httpx.Response(code, request=REQUEST, headers=headers)
    cls = {429: openai.RateLimitError, 401: openai.AuthenticationError, 400: openai.BadRequestError,
           500: openai.InternalServerError}.get(code, openai.APIStatusError)
    return cls(message, response=response, body=None)


class FakeChat:
    """Answers with each scripted item in turn: an exception is raised, a string is the answer."""

    def __init__(self, script):
        self.script = list(script)
        self.calls: list[dict] = []

    async def __call__(self, messages, json_mode, stream):
        self.calls.append({"messages": messages, "json_mode": json_mode, "stream": stream})
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return Answer(item, 10, 20)


class Gate:
    """Admits until the budget is spent; records every release, and that it came with the attempt's ticket."""

    def __init__(self, budget: float | None = None):
        self.budget, self.spent, self.released, self.tickets = budget, 0.0, [], 0

    async def acquire(self, tokens, worst_cost):
        if self.budget is not None and self.spent + worst_cost > self.budget:
            return None
        self.tickets += 1
        return self.tickets

    async def release(self, outcome, retry_after, worst_cost, cost, ticket):
        assert ticket == self.tickets
        self.spent += cost
        self.released.append((outcome, retry_after, cost))


def run(script, parse=lambda c: c, gate=None, policy=POLICY):
    chat, gate, slept = FakeChat(script), gate or Gate(), []

    async def sleep(s):
        slept.append(s)

    requester = RetryingRequester(chat, gate, policy, sleep=sleep)
    outcome = asyncio.run(requester.request([{"role": "user", "content": "q"}], 10, parse))
    return outcome, chat, gate, slept, requester


def test_success_first_time_is_one_attempt_with_its_cost():
    (content, attempts, t_in, t_out, cost), chat, gate, slept, _ = run(["answer"])
    assert content == "answer" and (t_in, t_out) == (10, 20)
    assert cost == pytest.approx((10 * 1.0 + 20 * 2.0) / 1e6)
    assert [a["status"] for a in attempts] == ["ok"] and slept == []
    assert gate.released == [("ok", None, cost)]
    assert chat.calls[0]["json_mode"] is True


def test_429_is_waited_out_without_counting_and_passes_retry_after_to_the_gate():
    (content, attempts, *_), _, gate, slept, _ = run([http_error(429, retry_after="2")] * 5 + ["fine"])
    assert content == "fine"
    assert [a["status"] for a in attempts] == ["http_429"] * 5 + ["ok"]  # 5 > max_attempts: 429s do not count
    assert gate.released[0][:2] == ("rate_limited", 2.0)
    assert slept == [2.0] * 5  # the request that got it waits out its Retry-After, after giving back its slot


def test_5xx_backs_off_and_gives_up_after_max_attempts_with_every_row():
    with pytest.raises(RequestFailed) as info:
        run([http_error(500)] * 3)
    assert info.value.reason == "http_5xx" and len(info.value.attempts) == 3


def test_backoff_grows_and_is_capped():
    _, _, _, slept, _ = run([http_error(500), http_error(500), "ok"])
    assert len(slept) == 2 and 0.5 <= slept[0] <= 1.0 and 1.0 <= slept[1] <= 2.0
    assert all(backoff_s(10, 1.0, 4.0) <= 4.0 for _ in range(50))


def test_4xx_gives_up_at_once_and_auth_failure_stops_the_run():
    with pytest.raises(RequestFailed) as info:
        run([http_error(404), "never"])
    assert info.value.reason == "http_4xx" and len(info.value.attempts) == 1
    with pytest.raises(AuthFailed):
        run([http_error(401)])


def test_unparseable_answers_are_paid_logged_and_asked_again():
    def parse(content):
        if content == "junk":
            raise ParseError("no JSON")
        return content

    (content, attempts, *_), _, gate, _, _ = run(["junk", "good"], parse=parse)
    assert content == "good"
    assert [a["status"] for a in attempts] == ["parse_error", "ok"]
    assert attempts[0]["cost_usd"] > 0 and sum(r[2] for r in gate.released) == pytest.approx(2 * attempts[1]["cost_usd"])


def test_refused_json_mode_is_dropped_for_the_rest_of_the_worker():
    refused = http_error(400, "response_format json_object is not supported")
    (content, *_), chat, _, _, requester = run([refused, "plain"])
    assert content == "plain" and [c["json_mode"] for c in chat.calls] == [True, False]
    assert requester.json_mode is False


def test_budget_refusal_raises_before_any_request():
    with pytest.raises(BudgetExhausted):
        run(["never"], gate=Gate(budget=0.0))


def test_classify_timeouts_connections_and_unknown_errors():
    assert classify(openai.APITimeoutError(request=REQUEST), True, 5.0)[0] == "timeout"
    assert classify(openai.APIConnectionError(request=REQUEST), True, 5.0)[0] == "connection"
    assert classify(ValueError("x"), True, 5.0) == ("error", None, "ValueError: x")
    assert classify(http_error(503), True, 5.0)[:2] == ("http_5xx", 503)
    # without JSON mode asked for, a 400 mentioning response_format is just a bad request
    assert classify(http_error(400, "response_format"), False, 5.0)[0] == "http_4xx"


def test_a_stall_is_a_failed_attempt_retried_and_a_refused_stream_is_dropped_for_the_worker():
    refused = http_error(400, "stream=true is not supported")
    (content, attempts, *_), chat, gate, slept, requester = run([Stalled("no first token within 1s"), refused, "ok"])
    assert content == "ok" and [a["status"] for a in attempts] == ["stall", "stream_refused", "ok"]
    assert [c["stream"] for c in chat.calls] == [True, True, False] and requester.stream is False
    assert [r[0] for r in gate.released] == ["stall", "error", "ok"] and len(slept) == 1
    # without streaming asked for, a 400 mentioning stream is just a bad request
    assert classify(refused, True, 5.0, stream=False)[0] == "http_4xx"
