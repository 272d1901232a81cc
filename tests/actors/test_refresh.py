"""`doctune refresh` end to end against the fake LLM server, on a copy of the sample repository under git.

One shared scenario (module fixture): synthesize v1, change 3 documentation pages, delete 1 and add 1, dry-run
then refresh (v2); synthesize the changed repository from scratch in a second home with the same config. The
tests read its figures; the rename test, last, goes on from its end.
"""

import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from backend.config import SAMPLE_REPO
from backend.export_config import ExportConfig
from backend.ingest_config import IngestConfig
from tests.actors.test_synth_run import KEY, openai_cfg
from tests.fake_llm import FakeLLMServer

DOCS = ["docs/**", "README.md"]
CHANGED = ["docs/howto/customs-holds.md", "docs/howto/quote-a-shipment.md", "docs/runbooks/oncall.md"]
DELETED = "docs/howto/audit-the-ledger.md"
ADDED = "docs/howto/track-a-pallet.md"
NEW_PAGE = """# Track a pallet

Every pallet carries a tidemark label whose id starts with `PLT-`. Scan it at the dock door with
`tidemark track PLT-0042` to see its last three moves and the carrier that holds it now.

## When a pallet goes missing

Run `tidemark track --lost PLT-0042`: the ledger lists every scan of the pallet since it entered the yard,
and the yard slot it was last seen in. Call the yard lead when the last scan is older than 4 hours.
"""
# what the refresh must match, sample for sample; ids, runs, chunk ids and commits say when a sample was made
COMPARED = ["split", "task", "language", "instruction", "input", "output", "messages", "path", "start_line",
            "end_line", "file_sha256", "generator", "template_version", "fact"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True, timeout=30).stdout.strip()


def change_repository(repo: Path) -> None:
    """3 pages changed (a paragraph added under their first heading), 1 deleted, 1 added; committed."""
    for rel in CHANGED:
        path = repo / rel
        head, rest = path.read_text().split("\n\n", 1)
        path.write_text(f"{head}\n\nRevised in 3.2: the desk now confirms every change by e-mail within 5 minutes, "
                        f"and the confirmation names the operator who made it.\n\n{rest}")
    (repo / DELETED).unlink()
    (repo / ADDED).write_text(NEW_PAGE)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "docs changed")


def exported(client, project: str, out: Path) -> list[dict]:
    """The current version's export (Parquet), its rows in a stable order of the compared fields."""
    files = client.export(project, ExportConfig(format="parquet", out=str(out)))["files"]
    rows = [r for f in files if f.endswith(".parquet") for r in pq.read_table(f).to_pylist()]
    return sorted(({k: r[k] for k in COMPARED} for r in rows), key=lambda r: tuple(str(r[k]) for k in COMPARED))


def corpus_and_dataset_page(home: Path, monkeypatch) -> dict[str, str]:
    """The Corpus & dataset page on `home` (AppTest, this process): its metrics, label -> value."""
    from streamlit.testing.v1 import AppTest

    from dashboard.common import _client

    monkeypatch.setenv("DOCTUNE_HOME", str(home))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("views/dataset.py").run()
    _client.clear()  # its client shares the scenario's store actor: left open
    assert not at.exception and not at.error, [e.message for e in at.exception] + [e.value for e in at.error]
    assert "Drift against the repository on disk" in [s.value for s in at.subheader]
    return {m.label: m.value for m in reversed(at.metric)}


@pytest.fixture(scope="module")
def scenario(ray_session, tmp_path_factory):
    from actors.client import DocTune

    tmp = tmp_path_factory.mktemp("refresh")
    repo = tmp / "repo"
    shutil.copytree(SAMPLE_REPO, repo)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "sample repository")
    first_commit = git(repo, "rev-parse", "HEAD")
    mp = pytest.MonkeyPatch()
    mp.setenv("DOCTUNE_API_KEY", KEY)
    client, scratch = DocTune(tmp / "home"), DocTune(tmp / "scratch")
    with FakeLLMServer(latency_s=0.0, api_key=KEY) as server:
        # the documentation only, one task a chunk: the scenario of the issue in a fraction of the time
        cfg = openai_cfg(server, max_chunks=None, tasks_per_chunk=1, samples_per_request=2)
        client.ingest(repo, "r", IngestConfig(include=DOCS))
        full_v1 = client.synth("r", cfg)
        v1 = client.store.dataset_rows("r", "v1")
        change_repository(repo)
        dry = client.refresh("r", dry_run=True)
        real = client.refresh("r")
        again = client.refresh("r")
        scratch.ingest(repo, "r", IngestConfig(include=DOCS))
        full = scratch.synth("r", cfg)
        out = {"client": client, "repo": repo, "v1": v1, "full_v1": full_v1, "dry": dry, "real": real,
               "again": again, "full": full, "first_commit": first_commit,
               "refreshed": exported(client, "r", tmp / "out-refresh"),
               "scratch": exported(scratch, "r", tmp / "out-scratch"),
               "versions": [d["version"] for d in client.datasets("r")]}
        yield out
    scratch.store.shutdown()
    client.store.shutdown()
    mp.undo()


@pytest.mark.slow
def test_refresh_pays_only_for_what_changed_and_equals_a_full_synthesis(scenario):
    real, full = scenario["real"], scenario["full"]
    assert (real["added"], real["changed"], real["deleted"]) == ([ADDED], sorted(CHANGED), [DELETED])
    assert real["dataset"] == "v2" and real["retire"] > 0 and real["keep"] > 0
    assert 0 < real["requests_sent"] <= 0.10 * full["requests"], (real["requests_sent"], full["requests"])
    lineage = next(d for d in scenario["client"].datasets("r") if d["version"] == "v2")
    assert (lineage["parent"], lineage["operation"], lineage["current"]) == ("v1", "refresh", True)
    # sample for sample what the changed repository yields from scratch (the test server answers a prompt alike)
    refreshed, scratch = scenario["refreshed"], scenario["scratch"]
    assert len(refreshed) == len(scratch)
    assert [r for r in refreshed if r not in scratch] == [] and [r for r in scratch if r not in refreshed] == []
    print(f"refresh: {real['requests_sent']} requests vs {full['requests']} for a full synthesis "
          f"({real['requests_sent'] / full['requests']:.1%}); {real['keep']} samples kept, {real['retire']} retired")


@pytest.mark.slow
def test_a_refresh_with_nothing_changed_sends_nothing_and_makes_no_version(scenario):
    again = scenario["again"]
    assert again["nothing_changed"] and again["requests_sent"] == 0 and again["dataset"] is None
    assert scenario["versions"] == ["v1", "v2"]


@pytest.mark.slow
def test_dry_run_counts_exactly_what_the_refresh_then_does(scenario):
    dry, real = scenario["dry"], scenario["real"]
    assert dry["dry_run"] and not real["dry_run"]
    for key in ("added", "changed", "deleted", "renamed", "keep", "carried", "retire", "retired_samples", "units",
                "requests", "estimate"):
        assert dry[key] == real[key], key
    assert real["requests_sent"] == dry["requests"]


@pytest.mark.slow
def test_kept_samples_keep_their_ids_and_files_their_split(scenario):
    client = scenario["client"]
    v1 = {r["sample_id"]: r for r in scenario["v1"]}
    v2 = {r["sample_id"]: r for r in client.store.dataset_rows("r", "v2")}
    kept, retired = set(v1) & set(v2), set(scenario["real"]["retired_samples"])
    assert not kept & retired and len(kept) + len(retired) <= len(v1)
    # besides the retired, only probes may leave: one that new training text now repeats is no probe any more
    assert {v1[s]["task"] for s in set(v1) - set(v2) - retired} <= {"probe"}
    assert all(v2[s]["split"] == v1[s]["split"] for s in kept)
    split_v1 = {r["path"]: r["split"] for r in v1.values() if r["split"] != "probe"}
    for r in v2.values():  # every file keeps its split; no sample of a held-out file reaches train
        if r["split"] != "probe" and r["path"] in split_v1:
            assert r["split"] == split_v1[r["path"]], r["path"]
    # provenance: the changed pages' samples name the new commit; every sample names its file's content hash
    head = client.store.projects()[0]["git_commit"]
    assert head != scenario["first_commit"]
    assert all(r["source_commit"] == head for r in v2.values() if r["path"] in CHANGED + [ADDED] and r["sample_id"]
               not in kept)
    assert all(r["source_commit"] in {head, scenario["first_commit"]} and r["file_sha256"] for r in v2.values())


@pytest.mark.slow
def test_drift_against_the_disk_another_version_and_an_adapters_data(scenario):
    client, v1 = scenario["client"], scenario["v1"]
    between = client.dataset_drift("r", "v1", against="v2")
    assert (between["added"], between["changed"], between["deleted"]) == ([ADDED], sorted(CHANGED), [DELETED])
    assert client.dataset_drift("r")["version"] == "v2"
    assert not any(client.dataset_drift("r")[k] for k in ("added", "changed", "deleted"))  # v2 is the disk
    stale_train = sum(1 for r in v1 if r["split"] == "train" and r["path"] in CHANGED + [DELETED])
    assert client.dataset_drift("r", "v1")["stale"]["train"] == stale_train > 0
    # an adapter trained on v1 (its run as training records it): how many of its samples are stale
    client.store.create_run("train-v1", "train", "r", {})
    client.store.finish_run("train-v1", "completed", {"dataset": "v1"})
    trained = sum(1 for r in v1 if r["split"] == "train")
    assert client.adapter_drift("r") == [{"run_id": "train-v1", "dataset": "v1", "trained_on": trained,
                                          "stale": stale_train}]


@pytest.mark.slow
def test_a_rename_costs_no_request_and_keeps_the_split(scenario, monkeypatch):
    client, repo = scenario["client"], scenario["repo"]
    old, new = "docs/howto/book-dock-windows.md", "docs/howto/dock-windows.md"
    before = [r for r in client.store.dataset_rows("r", "v2") if r["path"] == old]
    assert before
    git(repo, "mv", old, new)
    git(repo, "commit", "-qm", "renamed")
    page = corpus_and_dataset_page(client.home, monkeypatch)
    assert (page["Files added"], page["Files changed"], page["Files deleted"]) == ("1", "0", "1")
    assert page["Stale samples"] == str(len(before))
    dry = client.refresh("r", dry_run=True)
    assert dry["renamed"] == [[old, new]] and dry["requests"] == 0 and dry["carried"] == len(before)
    moved = client.refresh("r")
    assert moved["requests_sent"] == 0 and moved["retire"] == 0 and moved["dataset"] == "v3"
    after = {r["sample_id"]: r for r in client.store.dataset_rows("r", "v3")}
    assert all(after[r["sample_id"]]["path"] == new and after[r["sample_id"]]["split"] == r["split"]
               and after[r["sample_id"]]["output"] == r["output"] for r in before)
    assert not any(r["path"] == old for r in after.values())
    # the carried samples stay put at the next refresh: nothing changed
    assert client.refresh("r")["nothing_changed"]
