"""Every API fault at once — 20% 500s, 10% 429 with Retry-After, 5% timeouts, 10% malformed JSON (and 20%
<think> blocks): the run finishes, every unit ends as samples or as a dead letter with its reason, and
`--retry-failed` (`retry_failed=True`) recovers every dead letter once the faults stop."""

from collections import Counter

import pytest

from backend.config import SAMPLE_REPO
from backend.endpoint_config import EndpointConfig
from backend.synth_config import SynthConfig
from tests.fake_llm import Faults, FakeLLMServer

KEY = "sk-doctune-faults-SECRET-2222"


@pytest.fixture
def sample_client(client):
    client.ingest(SAMPLE_REPO, "s")
    return client


def units_accounted(client, summary) -> None:
    """Every unit of the run ends as samples or as a dead letter with a reason."""
    run = summary["run_id"]
    assert len(client.store.finished_units(run)) == summary["units"]
    for d in client.dead_letters(run_id=run):
        assert d["reason"] and d["detail"] is not None


@pytest.mark.slow
def test_every_fault_at_once_then_retry_failed(sample_client, monkeypatch, report):
    monkeypatch.setenv("DOCTUNE_API_KEY", KEY)
    faults = Faults(p_500=0.2, p_429=0.1, p_timeout=0.05, p_malformed=0.1, p_think=0.2, retry_after_s=0.05,
                    hang_s=3.0)
    with FakeLLMServer(latency_s=0.01, faults=faults, seed=3, api_key=KEY) as server:
        # 60 units: with 2 attempts and 35% failing answers, P(no unit dies) = (1 - 0.35**2)**60 < 0.001
        endpoint = EndpointConfig(base_url=server.base_url, model="fake-model", concurrency=8, request_timeout_s=0.5,
                                  backoff_base_s=0.05, backoff_max_s=0.2, max_attempts=2,
                                  prices={"fake-model": {"input": 1.0, "output": 2.0}})
        cfg = SynthConfig(generator="openai", endpoint=endpoint, max_chunks=30)
        summary = sample_client.synth("s", cfg)
        assert summary["status"] == "completed"
        units_accounted(sample_client, summary)
        stats = server.stats()
        assert stats["http_500"] and stats["fault_429"] and stats["timeouts"] and stats["malformed"] and stats["think"]
        log = Counter(r["status"] for r in sample_client.store.requests(summary["run_id"]))
        assert log["http_5xx"] and log["http_429"] and log["timeout"] and log["parse_error"] and log["ok"]
        assert log["ok"] == summary["done"]  # one accepted attempt per finished unit
        dead = summary["dead_letters"]
        assert dead > 0, "with 2 attempts and 35% faults some of 60 units die"
        assert Counter(d["reason"] for d in sample_client.dead_letters("s")).keys() <= {
            "http_5xx", "timeout", "parse_error", "connection"}

        server.set_faults(Faults())  # the faults stop; the dead letters come back to life
        retried = sample_client.synth("s", cfg, retry_failed=True)
        assert retried["run_id"] == summary["run_id"] and retried["done"] == dead
        assert sample_client.dead_letters("s") == [] and sample_client.stats("s")["dead_letters"] == 0
        with pytest.raises(ValueError, match="no dead letters"):
            sample_client.synth("s", cfg, retry_failed=True)
    usage = sample_client.store.run_usage(summary["run_id"])
    assert usage["samples"] == 3 * summary["units"]  # every unit answered, 3 samples each
    assert usage["cost_usd"] > 0
    report(units=summary["units"], requests=stats["requests"], http_500=stats["http_500"],
           http_429_retry_after=stats["fault_429"], timeouts=stats["timeouts"], malformed=stats["malformed"],
           think_blocks=stats["think"], dead_letters_after_faults=dead, dead_letters_after_retry=0,
           units_lost=summary["units"] - len(sample_client.store.finished_units(summary["run_id"])))
