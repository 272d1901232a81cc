"""`doctune serve` through the real `openai` client: the tiny base and two adapters with different random LoRA
weights, served by one serving run on Ray Serve (127.0.0.1) shared by the module's tests."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import run_cli
from tests.tiny_adapters import random_adapter, trained_run

pytestmark = pytest.mark.slow

QUESTIONS = ["How do I install the package?", "What does chunk_documents return?", "Explain the config file.",
             "Which errors can load() raise?", "hi"]
MAX_NEW = 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evaluated(client, train_run: str, adapter: Path, base: Path) -> str:
    """An evaluation of `train_run` whose outputs `backend.generate` produced exactly as the eval run does."""
    from backend.generate import generate, load_for_eval

    model, tokenizer = load_for_eval(adapter, base_model_path=base)
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS]
    outs = {side: generate(model, tokenizer, prompts, adapter=side == "tuned", batch_size=8, max_new_tokens=MAX_NEW)
            for side in ("base", "tuned")}
    eval_run = f"eval-{train_run}"
    client.store.create_run(eval_run, "eval", "s", {"adapter_run": train_run, "max_new_tokens": MAX_NEW})
    client.store.record_eval_results([
        {"run_id": eval_run, "adapter_run": train_run, "eval_set": "test", "sample_id": f"q{i}", "prompt": p,
         "base_output": outs["base"][i]["text"], "tuned_output": outs["tuned"][i]["text"]}
        for i, p in enumerate(prompts)])
    client.store.finish_run(eval_run, "completed", {})
    return eval_run


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory):
    from openai import OpenAI

    from actors.client import DocTune
    from backend.base_models import resolve_model_path

    home = tmp_path_factory.mktemp("serve-home")
    client = DocTune(home)
    client.store.upsert_project("s", str(home), None)
    base = resolve_model_path("tiny", home=home)
    adapters = {name: random_adapter(base, seed, home / name) for name, seed in (("r1", 1), ("r2", 2))}
    for name, adapter in adapters.items():
        trained_run(client.store, name, adapter)
    evaluated(client, "r1", adapters["r1"], base)
    result = client.serve(["r1", "r2"], port=free_port())
    yield {"client": client, "result": result, "openai": OpenAI(base_url=result["url"], api_key="none",
                                                                  max_retries=0, timeout=120),
           "base": base, "adapters": adapters}
    client.stop_serving()
    client.store.shutdown()


def ask(api, model: str, question: str, **kwargs) -> str:
    reply = api.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                        max_tokens=MAX_NEW, **kwargs)
    return reply.choices[0].message.content


def test_models_listed_and_each_adapter_answers_its_own_way(served):
    api, client = served["openai"], served["client"]
    assert sorted(m.id for m in api.models.list()) == ["base", "r1", "r2"]
    answers = {m: [ask(api, m, q) for q in QUESTIONS[:3]] for m in ("base", "r1", "r2")}
    assert answers["r1"] != answers["r2"] and answers["r1"] != answers["base"]
    stored = {r["sample_id"]: r for r in client.eval_results("eval-r1")}
    # greedy: the base and r1 answer exactly what evaluation generated for the same prompts
    assert answers["base"] == [stored[f"q{i}"]["base_output"] for i in range(3)]
    assert answers["r1"] == [stored[f"q{i}"]["tuned_output"] for i in range(3)]
    row = next(r for r in client.runs() if r["run_id"] == served["result"]["run_id"])
    assert row["kind"] == "serve" and row["status"] == "running" and row["summary"]["url"] == served["result"]["url"]


def test_streaming_yields_the_non_streamed_text(served):
    api = served["openai"]
    for model in ("r1", "r2"):
        stream = api.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTIONS[1]}],
                                             max_tokens=MAX_NEW, stream=True)
        chunks = [c for c in stream]
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert len([p for p in pieces if p]) > 1, "the answer came in one piece: not streamed"
        assert "".join(pieces) == ask(api, model, QUESTIONS[1])
        assert chunks[-1].choices[0].finish_reason in {"stop", "length"}


def test_concurrent_requests_mixing_adapters_answer_as_alone(served):
    """Requests batched together (several adapters in one batch) answer what each answers on its own."""
    api = served["openai"]
    asks = [(m, q) for q in QUESTIONS for m in ("base", "r1", "r2")]
    alone = [ask(api, m, q) for m, q in asks]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda mq: ask(api, *mq), asks))
    assert together == alone


def test_stop_and_max_tokens(served):
    api = served["openai"]
    full = ask(api, "r1", QUESTIONS[0])
    assert len(full) > 4
    cut = ask(api, "r1", QUESTIONS[0], stop=[full[3:5]])
    assert full.startswith(cut) and len(cut) <= 3 + 2
    reply = api.chat.completions.create(model="r1", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                        max_tokens=3)
    assert reply.usage.completion_tokens <= 3


def test_a_wrong_model_is_404_naming_the_served_ones(served):
    import openai

    with pytest.raises(openai.NotFoundError) as err:
        ask(served["openai"], "r9", "hi")
    assert "r9" in str(err.value) and "base, r1, r2" in str(err.value)


def test_another_host_without_a_key_is_refused(served, tmp_path):
    with pytest.raises(ValueError, match="DOCTUNE_SERVE_KEY"):
        served["client"].serve(["r1"], host="0.0.0.0")
    out = run_cli("serve", "--run", "r1", "--host", "0.0.0.0", home=tmp_path, env={"DOCTUNE_SERVE_KEY": ""})
    assert out.returncode == 2 and "DOCTUNE_SERVE_KEY" in out.stderr and "--host 127.0.0.1" in out.stderr, out.stderr


def test_verify_passes_then_names_the_prompt_when_the_template_differs(served):
    """Last in the module: it replaces the shared server by one with a served system prompt (and a key)."""
    import openai

    client = served["client"]
    result = client.verify_serving("r1")
    assert result["passed"] and result["checked"] == len(QUESTIONS) and result["eval_run"] == "eval-r1", result
    assert client.stop_serving() == served["result"]["run_id"] and client.serving() is None
    key = "test-key-0123"
    changed = client.serve(["r1"], port=free_port(), key=key, system_prompt="You are a pirate. Answer in rhymes.")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=changed["url"], api_key="wrong", max_retries=0).models.list()
    result = client.verify_serving("r1", key=key)
    assert not result["passed"] and result["differences"], result
    first = result["differences"][0]
    assert first["prompt"] in QUESTIONS and first["sample_id"].startswith("q") and first["expected"] != first["got"]
