"""A synthesis run that stops: cancelled (the dashboard's button, `doctune cancel`) it stops spending at once and
resumes; with `target_samples` it stops once it has enough, covering the files evenly; a unit whose result cannot
be stored is that unit's dead letter, not the run's. Real Ray, store and HTTP against the fake server. (Ctrl-C in
`doctune synth` itself: tests/test_synth_cli.py.)"""

import json
import time

import pytest

import tests.fake_llm
from backend.config import SAMPLE_REPO
from backend.synth_config import SynthConfig
from tests.fake_llm import FakeLLMServer

KEY = "sk-doctune-stop-SECRET-5151"


@pytest.fixture
def sample_client(client, monkeypatch):
    monkeypatch.setenv("DOCTUNE_API_KEY", KEY)
    client.ingest(SAMPLE_REPO, "s")
    return client


def openai_cfg(server, **kw) -> SynthConfig:
    base = dict(generator="openai", base_url=server.base_url, model="fake-model", concurrency=4,
                request_timeout_s=10.0, backoff_base_s=0.05, backoff_max_s=0.2, max_attempts=3)
    return SynthConfig.from_dict(base | kw)


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def accounted(client, summary) -> None:
    """Every unit ended as samples, a dead letter with its reason, or (a target reached) as not needed."""
    finished = client.store.finished_units(summary["run_id"])
    assert len(finished) + summary.get("not_needed", 0) == summary["units"]
    assert all(d["reason"] and d["detail"] for d in client.dead_letters(run_id=summary["run_id"]))


def test_cancel_stops_spending_at_once_and_the_rerun_resumes(sample_client):
    with FakeLLMServer(latency_s=0.4, api_key=KEY) as server:
        cfg = openai_cfg(server, max_chunks=40)
        started = sample_client.synth("s", cfg, wait=False)  # as the dashboard starts it
        run_id = started["run_id"]
        wait_until(lambda: server.stats()["requests"] >= 8, 120, "the run sent 8 requests")
        sample_client.cancel(run_id)  # the dashboard's cancel button
        cancelled_at = time.monotonic()
        end = wait_until(lambda: (p := sample_client.synth_progress(run_id))["status"] not in {"running", "queued"}
                         and p, 60, "the cancelled run ended")
        time.sleep(max(0.0, cancelled_at + 3 - time.monotonic()))
        late = [round(e["t"] - cancelled_at, 2) for e in server.request_log if e["t"] > cancelled_at + 2]
        assert late == [], f"requests the server received more than 2 s after the cancel: {late}"
        assert end["status"] == "cancelled" and end["units_done"] < started["units"]
        assert not end["dataset"]  # a stopped run is not curated
        sent = server.stats()["requests"]

        resumed = sample_client.synth("s", cfg)  # the same command again: resumes the cancelled run
        total = server.stats()["requests"]
    assert resumed["run_id"] == run_id and resumed["resuming"] and resumed["status"] == "completed"
    assert resumed["done_before"] == end["units_done"] and resumed["dataset"]
    accounted(sample_client, resumed)
    # answers received before the cancel were kept: only the requests cancelled in flight are sent twice
    assert total - sent == resumed["units"] - resumed["done_before"]
    assert total <= resumed["units"] + cfg.endpoint.concurrency


def test_target_samples_stops_once_enough_passed_validation(sample_client):
    with FakeLLMServer(latency_s=0.05, api_key=KEY) as server:
        everything = sample_client.synth("s", openai_cfg(server), dry_run=True)
        summary = sample_client.synth("s", openai_cfg(server, target_samples=40, concurrency=2))
        sent = server.stats()["requests"]
    assert summary["status"] == "completed" and summary["dataset"], summary.get("error")
    accounted(sample_client, summary)
    samples = sample_client.store.samples([summary["run_id"]])
    trained = [s for s in samples if s["task"] != "probe"]
    assert 40 <= len(trained) < 40 + 2 * 3  # the unit that met it and the other one in flight, 3 samples each
    assert summary["not_needed"] > 0 and summary["done"] + summary["not_needed"] == everything["units"]
    assert sent <= summary["done"] + 2  # nothing sent once the target was met but the 2 in flight
    # even coverage: the units done came one per file, in a seeded order of the files, before any file twice
    done_paths = [s["path"] for s in samples]
    files = {c["path"] for c in sample_client.store.chunks("s").to_pylist()}
    assert len(set(done_paths)) == min(len(files), summary["done"])


def test_a_result_the_store_refuses_is_its_units_dead_letter(sample_client, monkeypatch):
    """An answer nobody expected: JSON whose text holds a lone surrogate escape. It parses, but DuckDB refuses the
    string; that unit becomes a dead letter with the exception, every other unit lands, and the run is curated.
    After the fix (here: the endpoint answers normally again), `retry_failed` retries exactly that unit."""
    good = tests.fake_llm.content_for

    def odd(messages):
        content = good(messages)
        if "TASK: qa" not in json.dumps(messages):
            return content
        obj = json.loads(content)
        obj["samples"][0]["instruction"] = "What is " + "\\ud800" + "?"  # the escape, in the JSON text itself
        return json.dumps(obj).replace("\\\\ud800", "\\ud800")

    monkeypatch.setattr(tests.fake_llm, "content_for", odd)
    with FakeLLMServer(latency_s=0.0, api_key=KEY) as server:
        cfg = openai_cfg(server, max_chunks=12)
        summary = sample_client.synth("s", cfg)
        assert summary["status"] == "completed" and summary["dataset"], summary.get("error")
        accounted(sample_client, summary)
        dead = sample_client.dead_letters(run_id=summary["run_id"])
        qa = [u for u in sample_client.store.requests(summary["run_id"]) if u["task"] == "qa"]
        assert dead and len(dead) == len({u["cache_key"] for u in qa})
        assert {d["task"] for d in dead} == {"qa"} and {d["reason"] for d in dead} == {"exception"}
        assert all("surrogate" in d["detail"] and "Traceback" in d["detail"] for d in dead)
        assert summary["samples"] > 0 and summary["done"] == summary["units"] - len(dead)

        monkeypatch.setattr(tests.fake_llm, "content_for", good)
        retried = sample_client.synth("s", cfg, retry_failed=True)
    assert retried["run_id"] == summary["run_id"] and retried["status"] == "completed"
    assert retried["dead_letters"] == 0 and retried["done"] == len(dead)
