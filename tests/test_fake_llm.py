"""The fake OpenAI-compatible server, driven through the real `openai` client over HTTP."""

from __future__ import annotations

import ast
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

from tests.fake_llm import SAMPLE_TASKS, FakeLLMServer, Faults, content_for  # noqa: E402

pytestmark = pytest.mark.timeout(30)

CHUNK = """# Config loading

The `load_config` function reads a TOML file from disk. It returns a plain dict with every key.
Missing keys fall back to the defaults in `DEFAULTS`. Unknown keys raise a `ConfigError`!

```python
cfg = load_config("settings.toml")
```
"""

OTHER_CHUNK = """Retry policy
============

The client retries a failed call three times. Each retry waits twice as long as the one before.
`backoff_factor` sets the first wait in seconds.
"""


def gen_messages(task: str, count: int, chunk: str = CHUNK) -> list[dict]:
    return [
        {"role": "system", "content": "You generate fine-tuning data. Answer with JSON only."},
        {"role": "user", "content": f"TASK: {task}\nCOUNT: {count}\nSource:\n<<<CHUNK\n{chunk}\nCHUNK>>>\n"},
    ]


def judge_messages(sample: str) -> list[dict]:
    return [{"role": "user", "content": f"TASK: judge\nRate this sample 1-10.\n<<<SAMPLE\n{sample}\nSAMPLE>>>"}]


def pairwise_messages(a: str, b: str) -> list[dict]:
    return [{"role": "user", "content": f"TASK: pairwise\n<<<A\n{a}\nA>>>\n<<<B\n{b}\nB>>>\nWhich is better?"}]


def strip_think_and_fence(text: str) -> str:
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.S).strip()
    m = re.fullmatch(r"```(?:json)?\s*\n(.*)\n```", text, flags=re.S)
    return m.group(1) if m else text


def fake_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fake-llm")]


@pytest.fixture
def make_server():
    """Start FakeLLMServers; all are stopped (and their threads checked gone) at teardown."""
    servers: list[FakeLLMServer] = []

    def _make(**kw) -> FakeLLMServer:
        srv = FakeLLMServer(**kw).start()
        servers.append(srv)
        return srv

    yield _make
    for srv in servers:
        srv.stop()
    deadline = time.monotonic() + 3
    while fake_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not fake_threads(), f"leaked threads: {fake_threads()}"


@pytest.fixture
def make_client():
    clients = []

    def _make(srv: FakeLLMServer, *, api_key: str = "k", timeout: float = 5.0):
        c = openai.OpenAI(base_url=srv.base_url, api_key=api_key, max_retries=0, timeout=timeout)
        clients.append(c)
        return c

    yield _make
    for c in clients:
        c.close()


def ask(client, messages, **kw) -> str:
    r = client.chat.completions.create(model="fake-model", messages=messages, **kw)
    return r.choices[0].message.content


# ------------------------------------------------------------------------------------------- content


def test_deterministic_content_and_response_shape(make_server, make_client):
    srv = make_server()
    assert srv.base_url == f"http://127.0.0.1:{srv.port}/v1"
    c = make_client(srv)
    r1 = c.chat.completions.create(model="fake-model", messages=gen_messages("qa", 3), temperature=0.9, seed=1)
    r2 = c.chat.completions.create(model="fake-model", messages=gen_messages("qa", 3), temperature=0.1, seed=2)
    assert r1.choices[0].message.content == r2.choices[0].message.content == content_for(gen_messages("qa", 3))
    assert r1.object == "chat.completion" and r1.choices[0].finish_reason == "stop"
    assert r1.choices[0].message.role == "assistant"
    u = r1.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert (u.prompt_tokens, u.completion_tokens) == (r2.usage.prompt_tokens, r2.usage.completion_tokens)
    other = ask(c, gen_messages("qa", 3, OTHER_CHUNK))
    assert other != r1.choices[0].message.content
    assert srv.stats()["connections"] == 1  # keep-alive: one TCP connection for all three calls


@pytest.mark.parametrize("task", SAMPLE_TASKS)
def test_samples_count_shape_and_grounding(make_server, make_client, task):
    c = make_client(make_server())
    samples = json.loads(ask(c, gen_messages(task, 4), response_format={"type": "json_object"}))["samples"]
    assert len(samples) == 4
    for i, s in enumerate(samples, 1):
        assert all(isinstance(s[k], str) for k in ("instruction", "input", "output"))
        assert "Config loading" in s["instruction"] and str(i) in s["instruction"]
        assert s["output"]
    assert len({s["instruction"] for s in samples}) == 4
    assert any("load_config" in s["output"] or "TOML" in s["output"] for s in samples)
    if task in ("codegen", "completion"):
        for s in samples:
            code = re.search(r"```python\n(.*?)```", s["output"], re.S).group(1)
            tree = ast.parse(code)
            assert "load_config" in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    if task == "multiturn":
        for s in samples:
            roles = [m["role"] for m in s["messages"]]
            assert roles == ["user", "assistant", "user", "assistant"]
            assert all(m["content"] for m in s["messages"])


def test_rst_title_is_the_topic_and_count_zero(make_server, make_client):
    c = make_client(make_server())
    samples = json.loads(ask(c, gen_messages("explain", 2, OTHER_CHUNK)))["samples"]
    assert all("Retry policy" in s["instruction"] for s in samples)
    assert json.loads(ask(c, gen_messages("qa", 0))) == {"samples": []}


def test_judge_shape_and_badsample(make_server, make_client):
    c = make_client(make_server())
    good = json.loads(ask(c, judge_messages("Q: what does load_config return? A: a dict.")))
    assert set(good) == {"score", "reason"} and isinstance(good["score"], int) and 4 <= good["score"] <= 10
    assert isinstance(good["reason"], str) and good["reason"]
    assert json.loads(ask(c, judge_messages("Q: what does load_config return? A: a dict."))) == good
    bad = json.loads(ask(c, judge_messages("Q: ... A: BADSAMPLE nonsense")))
    assert bad["score"] == 2
    scores = {json.loads(ask(c, judge_messages(f"sample number {i}")))["score"] for i in range(20)}
    assert len(scores) > 1 and all(1 <= s <= 10 for s in scores)


def test_pairwise(make_server, make_client):
    c = make_client(make_server())
    short, long_ = "A dict.", "It returns a dict of settings, with defaults filled in for missing keys."
    r = json.loads(ask(c, pairwise_messages(short, long_)))
    assert r["winner"] == "B" and isinstance(r["reason"], str)
    assert json.loads(ask(c, pairwise_messages(long_, short)))["winner"] == "A"
    assert json.loads(ask(c, pairwise_messages("x" * 100, "y" * 95)))["winner"] == "tie"
    assert json.loads(ask(c, pairwise_messages("y" * 95, "x" * 100)))["winner"] == "tie"


def test_anything_else_gives_empty_samples(make_server, make_client):
    c = make_client(make_server())
    assert json.loads(ask(c, [{"role": "user", "content": "Hello there"}])) == {"samples": []}
    assert json.loads(ask(c, [{"role": "user", "content": "TASK: qa\nCOUNT: 2\nno chunk markers"}])) == {"samples": []}
    assert json.loads(ask(c, [{"role": "user", "content": "TASK: judge\nno sample"}])) == {"samples": []}


def test_models_endpoint(make_server, make_client):
    srv = make_server(model="my-model")
    assert [m.id for m in make_client(srv).models.list()] == ["my-model"]


# -------------------------------------------------------------------------------------- rate limits


def test_rpm_sliding_window(make_server, make_client):
    srv = make_server(rpm=120, window_s=1.0)  # 2 requests per 1 s window
    c = make_client(srv)
    ask(c, gen_messages("qa", 1))
    ask(c, gen_messages("qa", 1))
    t0 = time.monotonic()
    with pytest.raises(openai.RateLimitError) as ei:
        ask(c, gen_messages("qa", 1))
    retry_after = float(ei.value.response.headers["Retry-After"])
    assert 0.05 <= retry_after <= 1.0
    assert ei.value.status_code == 429
    time.sleep(max(0.0, retry_after - (time.monotonic() - t0)) + 0.02)
    ask(c, gen_messages("qa", 1))  # the oldest request has left the window
    s = srv.stats()
    assert (s["requests"], s["ok"], s["http_429"], s["rate_limited_429"], s["fault_429"]) == (4, 3, 1, 1, 0)
    assert [e["status"] for e in srv.request_log] == [200, 200, 429, 200]


def test_openai_client_retries_honour_retry_after(make_server):
    srv = make_server(rpm=60, window_s=0.5)  # capacity max(1, 0.5) = 1 per 0.5 s
    with openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=3, timeout=5) as c:
        for _ in range(3):
            ask(c, gen_messages("qa", 1))
    s = srv.stats()
    assert s["ok"] == 3 and s["rate_limited_429"] >= 1


# ------------------------------------------------------------------------------------------- faults


def test_injected_500_and_runtime_set_faults(make_server, make_client):
    srv = make_server(faults=Faults(p_500=1.0))
    c = make_client(srv)
    with pytest.raises(openai.InternalServerError) as ei:
        ask(c, gen_messages("qa", 1))
    assert ei.value.status_code == 500 and ei.value.response.json()["error"]["type"] == "server_error"
    srv.set_faults(Faults())
    assert json.loads(ask(c, gen_messages("qa", 1)))["samples"]
    assert srv.stats()["http_500"] == 1 and srv.stats()["ok"] == 1


def test_injected_429_has_retry_after(make_server, make_client):
    srv = make_server(faults=Faults(p_429=1.0, retry_after_s=0.25))
    with pytest.raises(openai.RateLimitError) as ei:
        ask(make_client(srv), gen_messages("qa", 1))
    assert ei.value.response.headers["Retry-After"] == "0.250"
    s = srv.stats()
    assert (s["http_429"], s["fault_429"], s["rate_limited_429"]) == (1, 1, 0)


def test_seeded_faults_are_reproducible(make_server, make_client):
    def statuses(seed: int) -> list[int]:
        srv = make_server(faults=Faults(p_500=0.5), seed=seed)
        c = make_client(srv)
        for _ in range(16):
            try:
                ask(c, gen_messages("qa", 1))
            except openai.InternalServerError:
                pass
        return [e["status"] for e in srv.request_log]

    a, b = statuses(7), statuses(7)
    assert a == b and 200 in a and 500 in a


def test_timeout_fault(make_server, make_client):
    srv = make_server(faults=Faults(p_timeout=1.0, hang_s=1.0))
    c = make_client(srv, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        ask(c, gen_messages("qa", 1))
    assert time.monotonic() - t0 < 0.9
    srv.set_faults(Faults())
    assert json.loads(ask(c, gen_messages("qa", 1)))["samples"]
    deadline = time.monotonic() + 2
    while len(srv.request_log) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    log = sorted(srv.request_log, key=lambda e: e["t"])
    assert [e["status"] for e in log] == [499, 200]  # the hung request saw its client leave and sent nothing
    assert srv.stats()["timeouts"] == 1 and srv.stats()["ok"] == 1


def test_timeout_fault_answers_if_client_waits(make_server, make_client):
    srv = make_server(faults=Faults(p_timeout=1.0, hang_s=0.3))
    t0 = time.monotonic()
    content = ask(make_client(srv, timeout=5), gen_messages("qa", 2))
    assert time.monotonic() - t0 >= 0.3
    assert content == content_for(gen_messages("qa", 2))


def test_malformed_content_is_not_json(make_server, make_client):
    srv = make_server(faults=Faults(p_malformed=1.0))
    c = make_client(srv)
    prompts = [gen_messages(t, 2, ch) for t in SAMPLE_TASKS for ch in (CHUNK, OTHER_CHUNK)]
    prompts += [judge_messages(f"s{i}") for i in range(4)] + [pairwise_messages("a", f"b{i}") for i in range(4)]
    prompts += [[{"role": "user", "content": f"hello {i}"}] for i in range(4)]
    for msgs in prompts:
        text = ask(c, msgs)
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        with pytest.raises(json.JSONDecodeError):
            json.loads(strip_think_and_fence(text))
        # cut before the first required field is complete: no repair can recover the answer
        assert '"output"' not in text
        assert not re.search(r'score"?\s*:\s*\d', text) and not re.search(r'winner"?\s*:\s*"(A|B|tie)"', text)
    assert srv.stats()["malformed"] == len(prompts) == srv.stats()["ok"]


def test_think_wrapped_content_parses_after_stripping(make_server, make_client):
    srv = make_server(faults=Faults(p_think=1.0))
    c = make_client(srv)
    for msgs in (gen_messages("codegen", 2), judge_messages("x"), pairwise_messages("a", "bbbb")):
        text = ask(c, msgs)
        assert text.startswith("<think>") and "```json" in text
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        assert json.loads(strip_think_and_fence(text)) == json.loads(content_for(msgs))
    assert srv.stats()["think"] == 3


def test_faults_validation():
    with pytest.raises(ValueError):
        Faults(p_500=1.5)
    with pytest.raises(ValueError):
        Faults(p_500=0.6, p_429=0.6)


# ------------------------------------------------------------------------------ auth, stats, bounds


def test_api_key_enforced(make_server, make_client):
    srv = make_server(api_key="secret")
    with pytest.raises(openai.AuthenticationError) as ei:
        ask(make_client(srv, api_key="wrong"), gen_messages("qa", 1))
    assert ei.value.status_code == 401
    assert json.loads(ask(make_client(srv, api_key="secret"), gen_messages("qa", 1)))["samples"]
    log = [(e["status"], e["authorization"]) for e in srv.request_log]
    assert log == [(401, "Bearer wrong"), (200, "Bearer secret")]


def test_stats_log_and_reset(make_server, make_client):
    srv = make_server(latency_s=0.05)
    c = make_client(srv)
    t0 = time.monotonic()
    ask(c, gen_messages("qa", 1))
    assert time.monotonic() - t0 >= 0.05
    ask(c, judge_messages("x"))
    ask(c, pairwise_messages("a", "b"))
    s = srv.stats()
    assert s["requests"] == 3 and s["ok"] == 3 and s["judge"] == 2
    assert {"requests", "ok", "http_429", "rate_limited_429", "fault_429", "http_500", "timeouts", "malformed",
            "think", "judge"} <= set(s)
    log = srv.request_log
    assert [e["kind"] for e in log] == ["samples", "judge", "pairwise"]
    assert all(e["authorization"] == "Bearer k" and len(e["body_sha"]) == 64 for e in log)
    assert log[0]["t"] < log[1]["t"] < log[2]["t"]
    srv.reset_stats()
    assert all(v == 0 for v in srv.stats().values()) and srv.request_log == []


def test_raw_http_errors_keep_connection_usable(make_server):
    srv = make_server()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.request("POST", "/v1/chat/completions", body=b"{not json", headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 400 and "error" in json.loads(r.read())
        conn.request("GET", "/nope")
        r = conn.getresponse()
        assert r.status == 404 and r.getheader("Content-Length")
        r.read()
        body = json.dumps({"model": "m", "messages": judge_messages("x")})
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("Connection") is None  # same keep-alive connection
        assert json.loads(json.loads(r.read())["choices"][0]["message"]["content"])["score"] >= 1
        conn.putrequest("POST", "/v1/chat/completions")
        conn.putheader("Content-Length", str(100 * 1024 * 1024))
        conn.endheaders()
        r = conn.getresponse()
        assert r.status == 413 and r.getheader("Connection") == "close"
        r.read()
    finally:
        conn.close()
    assert srv.stats()["connections"] == 1


def test_concurrent_clients(make_server, make_client):
    srv = make_server(latency_s=0.01, rpm=6000, window_s=1.0)  # 100 per second
    c = make_client(srv)
    errors: list[BaseException] = []
    contents: list[str] = []

    def worker(i: int) -> None:
        try:
            for j in range(8):
                contents.append(ask(c, gen_messages("qa", 1 + (i + j) % 3)))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert len(set(contents)) == 3 and len(contents) == 64
    s = srv.stats()
    assert s["requests"] == s["ok"] == 64 and s["connections"] <= 8


def test_connection_cap_answers_503(make_server, monkeypatch):
    import tests.fake_llm as fake_llm

    monkeypatch.setattr(fake_llm, "MAX_CONNECTIONS", 2)
    srv = make_server()
    held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(2)]
    try:
        deadline = time.monotonic() + 3
        while srv.stats()["connections"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        conn.request("GET", "/v1/models")
        r = conn.getresponse()
        assert r.status == 503 and r.getheader("Retry-After") == "1"
        conn.close()
    finally:
        for h in held:
            h.close()


def test_stop_is_prompt_with_a_hanging_request(make_server):
    srv = make_server(faults=Faults(p_timeout=1.0, hang_s=30.0))
    errors: list[BaseException] = []

    def call():
        try:
            with openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=0, timeout=20) as c:
                ask(c, gen_messages("qa", 1))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    deadline = time.monotonic() + 3
    while srv.stats()["timeouts"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.stats()["timeouts"] == 1
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 1.0
    t.join(5)
    assert not t.is_alive() and errors and isinstance(errors[0], openai.APIConnectionError)
    assert not fake_threads()
    srv.stop()  # idempotent


def test_standalone_cli():
    script = Path(__file__).with_name("fake_llm.py")
    p = subprocess.Popen([sys.executable, str(script), "--port", "0", "--latency", "0.01", "--rpm", "600"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url)
        with openai.OpenAI(base_url=url, api_key="k", max_retries=0, timeout=5) as c:
            assert json.loads(ask(c, gen_messages("qa", 2)))["samples"]
        p.send_signal(2)  # SIGINT, as Ctrl-C
        assert p.wait(10) == 0
        assert json.loads(p.stderr.read())["ok"] == 1
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
