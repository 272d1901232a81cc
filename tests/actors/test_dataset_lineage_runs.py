"""Lineage through real runs: a synthesis makes v1, a review v2, retrying the run's dead letters makes v3 on v2
that keeps the review (and the run's new samples), and the review's multi-turn edit is in v3's export."""

import json
import time

import pytest

from backend.config import SAMPLE_REPO
from backend.export_config import ExportConfig
from backend.review import ReviewError
from tests.actors.test_synth_run import KEY, openai_cfg
from tests.fake_llm import Faults, FakeLLMServer


def wait_for_new_version(client, run_id: str, old: set[str], timeout_s: float = 180) -> dict:
    """The run's progress once it has ended and curated into a version not in `old`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        progress = client.synth_progress(run_id)
        if progress["status"] not in {"running", "queued"} and progress["dataset"] not in old | {None}:
            return progress
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} made no new version within {timeout_s}s: {client.synth_progress(run_id)}")


@pytest.mark.slow
def test_retried_dead_letters_land_on_the_reviewed_version(client, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCTUNE_API_KEY", KEY)
    client.ingest(SAMPLE_REPO, "s")
    with FakeLLMServer(latency_s=0.01, faults=Faults(p_500=0.4), api_key=KEY) as server:
        first = client.synth("s", openai_cfg(server, max_chunks=12, max_attempts=1))
        assert first["dead_letters"] > 0 and first["dataset"] == "v1"
        v1 = {r["sample_id"]: r for r in client.store.dataset_rows("s", "v1")}
        multi = next(r for r in v1.values() if r["messages"])
        single = [r for r in v1.values() if not r["messages"]][:2]
        turns = [dict(m) for m in multi["messages"]]
        turns[-1]["content"] = "REVIEWED: the last answer, rewritten"
        reviewed = client.review("s", [{"sample_id": multi["sample_id"], "messages": turns},
                                       {"sample_id": single[0]["sample_id"], "output": "REVIEWED single"},
                                       {"sample_id": single[1]["sample_id"], "reject": True}], note="first pass")
        assert reviewed == {"version": "v2", "parent": "v1", "edited": 2, "rejected": 1}

        server.set_faults(Faults())
        client.retry_dead_letters(first["run_id"])
        end = wait_for_new_version(client, first["run_id"], {"v1", "v2"})
    assert end["dataset"] == "v3" and end["dead_letters"] == 0
    listed = {d["version"]: d for d in client.datasets("s")}
    assert (listed["v3"]["parent"], listed["v3"]["operation"], listed["v3"]["current"]) == ("v2", "retry", True)
    v3 = {r["sample_id"]: r for r in client.store.dataset_rows("s", "v3")}
    assert len(v3) > len(v1) - 1  # the retried units' samples joined the reviewed ones
    assert single[1]["sample_id"] not in v3 and v3[single[0]["sample_id"]]["output"] == "REVIEWED single"
    assert v3[multi["sample_id"]]["messages"] == turns
    assert client.dataset_lineage("s", "v3")["left_out"] == []
    assert [r["version"] for r in client.dataset_lineage("s", "v1")["left_out"]] == ["v2"]

    # export and training take the current version by default: the edit is in the export
    exported = client.export("s", ExportConfig(format="openai", out=str(tmp_path / "out")))
    assert exported["version"] == "v3"
    lines = [json.loads(line) for f in exported["files"] if f.endswith(".jsonl") for line in open(f)]
    assert any(m["content"] == "REVIEWED: the last answer, rewritten" for line in lines for m in line["messages"])
    with pytest.raises(ReviewError, match="line 1: field messages must alternate"):
        client.review("s", [{"sample_id": multi["sample_id"], "messages": turns[:1] + turns}])
