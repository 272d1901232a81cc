import subprocess
import sys

import pytest

from backend.config import SAMPLE_REPO
from backend.ingest_config import IngestConfig
from backend.ingest import IngestError
from backend.store import StoreLockedError
from conftest import REPO, write_tree
from test_ingest import hostile_tree  # noqa: F401  (same hostile corpus as the walker test)


def test_ingest_then_reingest_does_no_work(client, tmp_path):
    root = write_tree(tmp_path / "r", {
        "docs/a.md": "# Alpha\n\n" + "Alpha explains berths. " * 50,
        "docs/b.rst": "Beta\n====\n\nBeta text about slots.\n",
        "pkg/mod.py": '"""Module doc."""\n\ndef f(x: int) -> int:\n    """Double."""\n    return 2 * x\n',
    })
    first = client.ingest(root, "p")
    assert (first.new, first.changed, first.unchanged) == (3, 0, 0) and first.chunks_written > 3
    chunks_before = client.store.chunks("p").to_pylist()

    again = client.ingest(root, "p")
    assert (again.new, again.changed, again.unchanged, again.chunks_written) == (0, 0, 3, 0)
    assert client.store.chunks("p").to_pylist() == chunks_before

    (root / "docs/b.rst").write_text("Beta\n====\n\nBeta changed entirely.\n")
    (root / "pkg/mod.py").unlink()
    third = client.ingest(root, "p")
    assert (third.changed, third.unchanged, third.gone) == (1, 1, 1)
    rows = client.store.chunks("p").to_pylist()
    assert not any(r["path"] == "pkg/mod.py" for r in rows)
    assert [r["text"] for r in rows if r["path"] == "docs/b.rst"] == ["Beta\n====\n\nBeta changed entirely."]
    stats = client.stats("p")
    assert stats["files"] == 2 and stats["gone"] == 1 and stats["chunks"] == len(rows)
    runs = client.runs("p")
    assert [r["status"] for r in runs] == ["completed"] * 3 and runs[0]["summary"]["gone"] == 1


def test_hostile_corpus_ingests_with_reasons(client, tmp_path):
    root = hostile_tree(tmp_path / "repo")
    report = client.ingest(root, "h", IngestConfig(max_file_bytes=4096))
    stats = client.stats("h")
    assert stats["skipped"] == report.skipped
    assert {"empty", "binary", "invalid_utf8", "too_large", "symlink_loop", "broken_symlink",
            "symlink_outside_repo", "not_regular_file", "unsupported_type"} <= set(stats["skipped"])
    files = {r["path"]: r for r in client.store.files("h").to_pylist()}
    assert all(r["skip_detail"] for r in files.values() if r["status"] == "skipped")
    # prompt-injection text is stored as text; nothing in a document is executed
    assert not (root / "PWNED").exists() and not (REPO / "PWNED").exists()
    texts = " ".join(r["text"] for r in client.store.chunks("h").to_pylist())
    assert "Ignore all previous instructions" in texts


def test_missing_path_writes_nothing(client, tmp_path):
    with pytest.raises(IngestError):
        client.ingest(tmp_path / "missing", "m")
    assert client.projects() == []


@pytest.mark.skipif(not SAMPLE_REPO.exists(), reason="sample repository not present")
def test_sample_repository_ingests_every_kind(client):
    report = client.ingest(SAMPLE_REPO, "sample")
    stats = client.stats("sample")
    assert report.skipped == {} or set(report.skipped) <= {"unsupported_type"}
    assert {"markdown", "rst", "python", "html", "notebook", "spec"} <= set(stats["files_by_kind"])
    assert stats["chunks"] > 100 and stats["tokens"] > 20_000
    assert stats["tokens_per_chunk"]["max"] <= 512
    heads = [r["heading_path"] for r in client.store.chunks("sample").to_pylist() if r["kind"] == "markdown"]
    assert any(len(h) >= 2 for h in heads)


def test_clients_share_one_store_actor(client, ray_session):
    from actors.client import DocTune

    other = DocTune(client.home)
    assert other.store.actor._actor_id == client.store.actor._actor_id
    other.store.upsert_project("shared", "/x", None)
    assert [p["name"] for p in client.projects()] == ["shared"]


HOLD = """
import sys, time
sys.path.insert(0, %r)
from backend.store import Store
s = Store(%r, role="someone else")
print("ready", flush=True)
time.sleep(60)
"""


def test_store_actor_refuses_a_file_held_elsewhere(ray_session, home):
    from actors.client import DocTune

    holder = subprocess.Popen([sys.executable, "-c", HOLD % (str(REPO), str(home / "doctune.duckdb"))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid}.*someone else"):
            DocTune(home)
    finally:
        holder.kill()
        holder.wait()
    DocTune(home).store.shutdown()  # the refused actor was removed; a new one opens the freed file


def test_ctrl_c_while_watching_stops_the_ingest_as_interrupted_and_the_rerun_goes_on(client, tmp_path):
    files = {f"docs/{i:03}.md": f"# Doc {i}\n\n" + f"Berth {i} takes slots. " * 200 for i in range(300)}
    root = write_tree(tmp_path / "r", files)

    def ctrl_c(planned: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.ingest(root, "p", on_plan=ctrl_c)
    (run,) = client.runs("p")
    assert (run["status"], run["error"]) == ("interrupted", None)
    again = client.ingest(root, "p")
    assert again.status == "completed" and again.new + again.unchanged == len(files)


def test_a_stopped_process_is_interrupted_not_failed(client, tmp_path):
    from actors.ingest_run import ingest_repository
    from backend.run_status import new_run_id

    root = write_tree(tmp_path / "r", {"a.md": "# A\n\n" + "Alpha explains berths. " * 50})
    run_id = new_run_id("ingest")
    client.store.create_run(run_id, "ingest", "q", {})

    def killed(files: int, size: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_repository(client.store, root, "q", IngestConfig(), run_id, on_progress=killed)
    assert client.store.run(run_id)["status"] == "interrupted"
