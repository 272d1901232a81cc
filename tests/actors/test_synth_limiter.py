"""A synthesis run on Ray against the fake server whose streams stall: the stalled requests are closed and retried
long before their hang ends, and the run leaves its limiter's timeline for the synthesis page."""

import time

import pytest

from backend.config import SAMPLE_REPO
from tests.actors.test_synth_run import openai_cfg, units_accounted
from tests.fake_llm import Faults, FakeLLMServer


@pytest.fixture
def sample_client(client):
    client.ingest(SAMPLE_REPO, "s")
    return client


def test_stalled_streams_are_retried_and_the_limiter_timeline_is_stored(sample_client):
    with FakeLLMServer(latency_s=0.01, faults=Faults(p_stall=0.2, p_429=0.1, retry_after_s=0.1, hang_s=60),
                       seed=3) as server:
        started = time.monotonic()
        summary = sample_client.synth("s", openai_cfg(server, first_token_timeout_s=2.0, stall_timeout_s=0.5,
                                                          rpm=240))  # 4 a second: a run of points
        elapsed = time.monotonic() - started
        stats = server.stats()
    assert summary["status"] == "completed" and summary["failed"] == 0
    units_accounted(sample_client, summary)
    assert stats["stall"] >= 1 and stats["streamed"] >= summary["done"]
    assert elapsed < 60  # every stall would have held its request for 60 s

    points = sample_client.limiter_timeline(summary["run_id"])
    assert points and points[0]["t"] == 0 and all(p["cap"] >= 1 for p in points)
    assert sum(p["stalls"] for p in points) == stats["stall"]  # each stall the server made, seen and retried once
    assert len(points) >= 2 and max(p["ok_per_min"] or 0 for p in points) > 0
    assert sum((p["rate_limited_per_min"] or 0) for p in points) > 0
