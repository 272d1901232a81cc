"""Synthesis through the real openai client over HTTP against the local fake server, on a real Ray and store."""

import json

import pytest

from backend.config import SAMPLE_REPO
from backend.synth_config import SynthConfig
from tests.fake_llm import Faults, FakeLLMServer

KEY = "sk-doctune-test-SECRET-4242"


@pytest.fixture
def sample_client(client):
    client.ingest(SAMPLE_REPO, "s")
    return client


def openai_cfg(server, **kw) -> SynthConfig:
    base = dict(generator="openai", base_url=server.base_url, model="fake-model", max_chunks=12, concurrency=8,
                request_timeout_s=2.0, backoff_base_s=0.05, backoff_max_s=0.2, max_attempts=4,
                prices={"fake-model": {"input": 1.0, "output": 2.0}})
    return SynthConfig.from_dict(base | kw)  # endpoint keys beside the others: the flat form


def units_accounted(client, summary) -> None:
    """Every unit of the run ends as samples or as a dead letter with a reason."""
    run = summary["run_id"]
    finished = client.store.finished_units(run)
    assert len(finished) == summary["units"]
    for d in client.dead_letters(run_id=run):
        assert d["reason"] and d["detail"] is not None


def test_heuristic_synthesis_curates_a_version(sample_client):
    summary = sample_client.synth("s", SynthConfig(generator="heuristic", max_chunks=60))
    assert summary["status"] == "completed" and summary["samples"] > 60 and summary["requests"] == 0
    units_accounted(sample_client, summary)
    version = summary["dataset"]
    info = {d["version"]: d for d in sample_client.datasets("s")}[version]
    assert set(info["splits"]) == {"train", "val", "test", "probe"}
    rows = sample_client.store.dataset_rows("s", version)
    by_split = {}
    for r in rows:  # knowledge probes ask about train files: for leakage, they are on the train side
        by_split.setdefault(r["path"], set()).add("train" if r["split"] == "probe" else r["split"])
    assert all(len(splits) == 1 for splits in by_split.values()), "a source file leaked across splits"
    assert all(r["fact"] for r in rows if r["split"] == "probe"), "every heuristic probe carries its fact"
    from backend.curate import leakage

    assert leakage(rows) == []  # no probe repeats a training sample, no file straddles splits
    stats = sample_client.stats("s")
    assert stats["samples"] == info["splits"] and isinstance(stats["dead_letters"], int)


def test_api_synthesis_asks_for_knowledge_probes(sample_client):
    with FakeLLMServer() as server:
        summary = sample_client.synth("s", openai_cfg(server, max_chunks=16, probe_share=1.0))
    asked = [r for r in sample_client.store.requests(summary["run_id"]) if r["task"] == "probe"]
    assert summary["status"] == "completed", summary.get("error")
    units_accounted(sample_client, summary)
    probes = [s for s in sample_client.store.samples([summary["run_id"]]) if s["task"] == "probe"]
    assert probes and all(p["fact"] for p in probes) and len(asked) >= 16  # one probe request per chunk
    rows = sample_client.store.dataset_rows("s", summary["dataset"])
    train_files = {r["path"] for r in rows if r["split"] == "train"}
    kept = [r for r in rows if r["split"] == "probe"]
    assert kept and all(r["path"] in train_files for r in kept)


def test_rate_limit_is_honoured(sample_client):
    # the server admits 10 requests per 0.5 s window (1200/min); the client is told the same
    with FakeLLMServer(latency_s=0.0, rpm=1200, window_s=0.5) as server:
        cfg = openai_cfg(server, rpm=1200, rate_window_s=0.5, max_chunks=20)
        summary = sample_client.synth("s", cfg)
    assert summary["status"] == "completed" and summary["failed"] == 0
    stats = server.stats()
    assert stats["rate_limited_429"] <= 0.1 * stats["requests"]


def test_budget_stops_cleanly_before_the_cap(sample_client):
    with FakeLLMServer(latency_s=0.01) as server:
        cfg = openai_cfg(server, max_chunks=40, concurrency=2, max_cost_usd=0.02, max_output_tokens=500)
        summary = sample_client.synth("s", cfg)
    assert summary["status"] == "budget_stopped"
    assert 0 < summary["cost_usd"] <= 0.02
    assert summary["done"] < summary["units"]
    assert summary["dataset"]  # what was paid for is curated


def test_dry_run_estimates_and_sends_nothing(sample_client):
    with FakeLLMServer() as server:
        plan = sample_client.synth("s", openai_cfg(server), dry_run=True)
        assert server.stats()["requests"] == 0
    assert plan["estimate"]["requests"] == plan["units"] > 0 and plan["estimate"]["cost_usd"] > 0


def test_resume_reuses_cache_and_never_pays_twice(sample_client):
    with FakeLLMServer(latency_s=0.0) as server:
        cfg = openai_cfg(server, max_chunks=8)
        first = sample_client.synth("s", cfg)
        sent = server.stats()["requests"]
        again = sample_client.synth("s", cfg, new_run=True)  # a new run of the same config: all from cache
        assert server.stats()["requests"] == sent
    assert again["cached"] == first["units"] and again["requests"] == 0
    a = sample_client.store.dataset_rows("s", first["dataset"])
    b = sample_client.store.dataset_rows("s", again["dataset"])
    strip = lambda rows: sorted((r["split"], r["instruction"], r["output"]) for r in rows)  # noqa: E731
    assert strip(a) == strip(b)


def test_auth_failure_stops_the_run_with_a_clear_error(sample_client, monkeypatch):
    monkeypatch.setenv("DOCTUNE_API_KEY", "wrong")
    with FakeLLMServer(api_key=KEY) as server:
        summary = sample_client.synth("s", openai_cfg(server, max_chunks=4))
    assert summary["status"] == "failed" and "refused the key" in summary["error"]
    assert "wrong" not in json.dumps(summary)


def test_judge_scores_and_threshold_drop_bad_samples(client, tmp_path):
    from dataclasses import replace

    from backend.curate_config import CurateConfig
    from conftest import write_tree

    pages = {f"docs/p{i}.md": f"# Berth rule {i}\n\n" + f"Rule {i} says slots close early on day {i}. " * 12
             for i in range(6)}
    pages["docs/bad.md"] = "# Broken page\n\n" + "BADSAMPLE text that the judge must reject here. " * 12
    client.ingest(write_tree(tmp_path / "r", pages), "j")
    with FakeLLMServer() as server:
        cfg = openai_cfg(server, max_chunks=None, tasks_per_chunk=1, task_mix={"qa": 1.0}, probe_share=0)
        run = client.synth("j", cfg)["run_id"]
        before = server.stats()["judge"]
        version = client.curate("j", [run], CurateConfig(judge_threshold=3.0), judge_cfg=cfg)["version"]
        judged = server.stats()["judge"] - before
        again = client.curate("j", [run], replace(CurateConfig(), judge_threshold=3.0), judge_cfg=cfg)["version"]
        assert server.stats()["judge"] - before == judged  # judgements come from the cache the second time
    samples = client.store.samples([run])
    assert judged == len(samples)
    rows = client.store.dataset_rows("j", version)
    assert rows and not any("BADSAMPLE" in r["output"] for r in rows)
    assert all(r["judge_score"] >= 4 for r in rows)
    info = {d["version"]: d for d in client.datasets("j")}
    assert info[version]["stats"]["dropped_by_reason"].get("judge_below_threshold") == 3
    assert len(client.store.dataset_rows("j", again)) == len(rows)


def test_exec_check_runs_code_samples_against_the_repository(client, tmp_path):
    from backend.curate_config import CurateConfig
    from conftest import write_tree

    intro = "This page shows how the helper doubles numbers for the berth planner, step by step."
    root = write_tree(tmp_path / "r", {
        "mylib/__init__.py": '"""Helpers."""\n\ndef double(x: int) -> int:\n    """Twice x."""\n    return 2 * x\n',
        "docs/good.md": f"# Good\n\n{intro} Call it like this.\n\n```python\nfrom mylib import double\n"
                        "assert double(2) == 4\nprint('ok')\n```\n",
        "docs/wrong.md": f"# Wrong\n\n{intro} This example is wrong.\n\n```python\nfrom mylib import double\n"
                         "assert double(2) == 5, 'the docs are out of date'\n```\n",
        "docs/loop.md": f"# Loop\n\n{intro} This one never ends.\n\n```python\nfrom mylib import double\n"
                        "while True:\n    double(1)\n```\n",
    })
    client.ingest(root, "x")
    run = client.synth("x", SynthConfig(task_mix={"codegen": 1.0}, tasks_per_chunk=1, min_chunk_tokens=1))
    version = run["dataset"]
    plain = {r["path"] for r in client.store.dataset_rows("x", version)}
    assert {"docs/good.md", "docs/wrong.md", "docs/loop.md"} <= plain
    checked = client.curate("x", [run["run_id"]], CurateConfig(exec_check=True, exec_timeout_s=2))["version"]
    rows = client.store.dataset_rows("x", checked)
    assert {r["path"] for r in rows if r["path"].startswith("docs/")} == {"docs/good.md"}
    assert {r["exec_status"] for r in rows if r["path"] == "docs/good.md"} == {"pass"}
    stats = {d["version"]: d for d in client.datasets("x")}[checked]["stats"]
    assert stats["dropped_by_reason"]["exec_failed"] >= 2


def test_a_check_that_crashes_its_worker_fails_only_its_own_sample(ray_session):
    import os

    import ray

    from actors.curate_run import exec_statuses

    @ray.remote(max_retries=0)
    def crashing_check(samples, repo_root, timeout_s):
        if any(s["sample_id"] == "crash" for s in samples):
            os._exit(1)  # the worker dies: WorkerCrashedError
        return {s["sample_id"]: "pass" for s in samples}

    samples = [{"sample_id": f"s{i:02d}"} for i in range(55)] + [{"sample_id": "crash"}]
    statuses = exec_statuses(samples, None, 1, check=crashing_check)
    assert statuses.pop("crash") == "crashed"
    assert statuses == {f"s{i:02d}": "pass" for i in range(55)}


def wait_for_end(client, run_id: str, timeout_s: float = 120) -> dict:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        progress = client.synth_progress(run_id)
        if progress["status"] not in {"running", "queued"} and progress["dataset"]:
            return progress
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not end within {timeout_s}s: {client.synth_progress(run_id)}")


def test_a_run_started_without_waiting_goes_on_and_curates(sample_client, monkeypatch):
    """What the dashboard does: start, return at once, watch `synth_progress`; a detached driver curates."""
    monkeypatch.setenv("DOCTUNE_API_KEY", KEY)
    with FakeLLMServer(latency_s=0.05, api_key=KEY) as server:
        started = sample_client.synth("s", openai_cfg(server, max_chunks=10, concurrency=2), wait=False)
        assert started["detached"] and started["status"] == "running"
        first = sample_client.synth_progress(started["run_id"])
        assert first["units"] == started["units"] and first["units_done"] < first["units"]
        assert any(r["run_id"] == started["run_id"] and r["status"] == "running" for r in sample_client.runs("s"))
        end = wait_for_end(sample_client, started["run_id"])
        assert end["status"] == "completed" and end["units_done"] == end["units"] and end["samples"] > 0
        assert end["requests"] == server.stats()["requests"] and end["tokens_in"] > 0
        assert end["dataset"] in {d["version"] for d in sample_client.datasets("s")}


def test_dead_letters_retried_from_the_run_alone(sample_client, monkeypatch):
    """The dashboard's retry button: the run's own config, only its dead letters, without waiting."""
    monkeypatch.setenv("DOCTUNE_API_KEY", KEY)
    with FakeLLMServer(latency_s=0.01, faults=Faults(p_500=1.0), api_key=KEY) as server:
        failed = sample_client.synth("s", openai_cfg(server, max_chunks=4, max_attempts=1))
        assert failed["dead_letters"] == failed["units"] > 0
        progress = sample_client.synth_progress(failed["run_id"])
        assert progress["failures"] == {"http_5xx": failed["units"]}  # each 500 counted by its class
        assert progress["dead_reasons"] == {"http_5xx": failed["units"]}
        assert progress["priced"] and progress["budget_usd"] is None
        finished_at = sample_client.store.run(failed["run_id"])["finished_at"]
        plan = sample_client.retry_plan(failed["run_id"])
        assert plan == {"run_id": failed["run_id"], "dead_letters": failed["units"],
                        "reasons": {"http_5xx": failed["units"]}, "generator": "fake-model", "futile": 0}
        server.set_faults(Faults())
        server.reset_stats()
        retried = sample_client.retry_dead_letters(failed["run_id"])
        assert retried["run_id"] == failed["run_id"] and retried["detached"]
        end = wait_for_end(sample_client, failed["run_id"])
        assert end["dead_letters"] == 0 and end["samples"] > 0
        assert server.stats()["requests"] == failed["units"]  # only the dead letters were asked again
        # the run keeps its own finish time and figures; the retry is told apart beside them
        run = sample_client.store.run(failed["run_id"])
        assert run["finished_at"] == finished_at and run["summary"]["units"] == failed["units"]
        [retry] = run["summary"]["retries"]
        assert retry["units"] == failed["units"] and retry["done"] == failed["units"] and retry["failed"] == 0
        assert retry["finished"] >= retry["started"]
    with pytest.raises(ValueError, match="no synthesis run"):
        sample_client.retry_dead_letters("nope")


def test_no_samples_of_the_heuristic_handed_to_an_llm(sample_client, monkeypatch):
    """Retrying the offline generator's `no_samples` with it fails again: the plan says so, and an endpoint
    given to the retry asks an LLM for exactly those units in a run of its own, resolving what it covers."""
    monkeypatch.setenv("DOCTUNE_API_KEY", KEY)
    offline = sample_client.synth("s", SynthConfig(generator="heuristic", max_chunks=40))
    dead = sample_client.dead_letters(run_id=offline["run_id"])
    assert dead and {d["reason"] for d in dead} == {"no_samples"}
    assert all(d["path"] and d["start_line"] for d in dead)  # a person can open the chunk that failed
    plan = sample_client.retry_plan(offline["run_id"])
    assert plan["futile"] == plan["dead_letters"] == len(dead) and plan["generator"] == "heuristic"
    progress = sample_client.synth_progress(offline["run_id"])
    assert progress["priced"] and progress["failures"] == {} and progress["dead_reasons"] == {"no_samples": len(dead)}
    with FakeLLMServer(latency_s=0.01, api_key=KEY) as server:
        endpoint = openai_cfg(server).endpoint
        started = sample_client.retry_dead_letters(offline["run_id"], endpoint=endpoint)
        assert started["run_id"] != offline["run_id"]
        end = wait_for_end(sample_client, started["run_id"])
        asked = {r["chunk_id"] for r in sample_client.store.requests(started["run_id"])}
    assert asked == {d["chunk_id"] for d in dead}  # those chunks, and no other
    assert end["status"] == "completed" and end["samples"] > 0
    left = sample_client.dead_letters(run_id=offline["run_id"])
    assert len(left) < len(dead)  # what the LLM covered is resolved on the offline run
    assert len(dead) - len(left) == sample_client.store.run(started["run_id"])["summary"]["covered"]
