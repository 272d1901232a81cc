import asyncio
import json

import pytest

from backend.ratelimit import RateLimiter
from backend.endpoint_config import EndpointConfig
from backend.synth_config import SynthConfig
from backend.synthesize import (ParseError, choose_tasks, eligible_tasks, heuristic_response, parse_judgement,
                                parse_samples, plan_units)

GOOD = {"samples": [{"instruction": "How do I quote a lane?", "input": "", "output": "Call quote()."}]}


@pytest.mark.parametrize("content", [
    json.dumps(GOOD),
    "<think>The user wants JSON. Let me think {\"samples\": []}</think>\n" + json.dumps(GOOD),
    "Here you go:\n```json\n" + json.dumps(GOOD) + "\n```\nHope it helps",
    '{"samples": [{"instruction": "How do I quote a lane?", "input": "", "output": "Call quote().",},],}',
    '{"samples": [{"instruction": "How do I quote a lane?", "output": "Line one\nline two"}]}',
    '[{"instruction": "How do I quote a lane?", "output": "Call quote()."}]',
])
def test_parse_layers_recover_samples(content):
    samples = parse_samples(content)
    assert samples[0]["instruction"] == "How do I quote a lane?"


TWO = [{"instruction": "How do I quote a lane?", "output": "Call quote()."},
       {"instruction": "How do I book a berth?", "output": "Call book()."}]


@pytest.mark.parametrize("content", [
    "~~~json\n" + json.dumps(TWO) + "\n~~~\nAsk {more} if you like.",  # a tilde fence
    "  ```json\n" + json.dumps(TWO, indent=2) + "\n  ```\nAsk {more} if you like.",  # an indented one
    # not Markdown, but models write it: a fence opened mid-line, a closing fence glued to the JSON
    "Sure! ```json\n" + json.dumps(TWO) + "\n```\nAsk {more} if you like.",
    "```json\n" + json.dumps(TWO) + "```\nAsk {more} if you like.",
])
def test_fenced_lists_keep_every_sample(content):
    # the braces around stray text would make the outermost-braces layer fail: the fence must be found
    assert [s["instruction"] for s in parse_samples(content)] == [t["instruction"] for t in TWO]


def test_salvage_keeps_the_good_items_of_a_broken_list():
    content = ('{"samples": [{"instruction": "Q1 long enough", "output": "A1"}, '
               '{"instruction": "Q2", "output": "A2 is cut off here')
    assert [s["instruction"] for s in parse_samples(content)] == ["Q1 long enough"]


@pytest.mark.parametrize("content", ["", "I cannot help with that.", '{"samples": [{"instruction": ""}]}',
                                     "<think>only thinking", '{"samples": "nope"}'])
def test_unusable_responses_raise(content):
    with pytest.raises(ParseError):
        parse_samples(content)


def test_judgement_contract():
    assert parse_judgement('```json\n{"score": 8, "reason": "precise"}\n```') == (8.0, "precise")
    with pytest.raises(ParseError):
        parse_judgement('{"score": 11}')


def test_task_choice_is_deterministic_and_fits_the_chunk():
    doc = {"chunk_id": "c1", "kind": "markdown", "text": "Plain prose about berths."}
    code = {"chunk_id": "c2", "kind": "python", "text": "def f():\n    pass"}
    cfg = SynthConfig(tasks_per_chunk=2)
    assert set(eligible_tasks(doc)) == {"qa", "multiturn", "facts"}
    assert choose_tasks(doc, cfg) == choose_tasks(doc, cfg)
    assert set(choose_tasks(code, cfg)) <= {"qa", "codegen", "explain", "completion", "facts"}


def test_units_have_stable_cache_keys_that_depend_on_model_and_prompt():
    chunk = {"chunk_id": "c1", "kind": "python", "path": "pkg/m.py", "start_line": 1, "end_line": 3,
             "heading_path": ["pkg.m", "f"], "symbol": "f", "token_count": 40,
             "text": 'def f(x: int) -> int:\n    """Double x."""\n    return 2 * x'}
    a = plan_units([chunk], SynthConfig(generator="openai"), "p")
    b = plan_units([chunk], SynthConfig(generator="openai"), "p")
    c = plan_units([chunk], SynthConfig(generator="openai", endpoint=EndpointConfig(model="other")), "p")
    assert [u.cache_key for u in a] == [u.cache_key for u in b]
    assert {u.cache_key for u in a}.isdisjoint(u.cache_key for u in c)
    user = a[0].messages[1]["content"]
    assert "<<<CHUNK\n" + chunk["text"] + "\nCHUNK>>>" in user and "COUNT: 3" in user


def test_heuristic_answers_in_the_contract():
    chunk = {"chunk_id": "c1", "kind": "python", "path": "pkg/m.py", "start_line": 1, "end_line": 3,
             "heading_path": ["pkg.m", "f"], "symbol": "f", "token_count": 40,
             "text": 'def f(x: int) -> int:\n    """Double x.\n\n    Args:\n        x: a number.\n    """\n    return 2 * x'}
    for unit in plan_units([chunk], SynthConfig(tasks_per_chunk=4), "p"):
        samples = parse_samples(heuristic_response(unit, 3))
        assert samples and all(s["output"] for s in samples)


def test_chinese_prompts():
    chunk = {"chunk_id": "c1", "kind": "markdown", "path": "a.md", "start_line": 1, "end_line": 1,
             "heading_path": ["A"], "token_count": 40, "text": "Prose " * 30}
    unit = plan_units([chunk], SynthConfig(language="zh"), "p")[0]
    assert "简体中文" in unit.messages[1]["content"]


def run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


def test_limiter_window_and_a_lone_429():
    async def scenario():
        limiter = RateLimiter(rpm=4, tpm=10_000, concurrency=10, window_s=1.0, headroom=1.0)
        t0 = asyncio.get_running_loop().time()
        for _ in range(8):
            await limiter.acquire(10)
            await limiter.release("ok")
        elapsed = asyncio.get_running_loop().time() - t0
        assert 0.9 <= elapsed < 2.0  # the 5th request waited for the window to roll
        await limiter.acquire(10)
        await limiter.release("rate_limited", retry_after=0.3)
        # a lone 429 cuts the cap (to 0.7); its Retry-After is waited out by its own request (backend/llm_request.py)
        assert limiter.limit == 7 and limiter.snapshot()["paused_for_s"] == 0

    run(scenario())


def test_limiter_caps_tokens_and_concurrency():
    async def scenario():
        limiter = RateLimiter(rpm=1000, tpm=100, concurrency=2, window_s=0.5, headroom=1.0)
        await limiter.acquire(60)
        await limiter.acquire(30)
        assert limiter.in_flight == 2
        waiter = asyncio.ensure_future(limiter.acquire(5))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # the concurrency cap holds it
        await limiter.release("ok")
        await asyncio.wait_for(waiter, 1)
        await limiter.release("ok")
        await limiter.release("ok")
        t0 = asyncio.get_running_loop().time()
        await limiter.acquire(50)  # 95 + 50 > 100 tokens in the window: wait for the first 60 to expire
        assert asyncio.get_running_loop().time() - t0 >= 0.3

    run(scenario())
