"""Dataset lineage in the store: every version's parent and operation, the current version, reviews kept as
decisions per sample and carried into later versions of their line, and a multi-turn edit that reaches export."""

import pyarrow.parquet as pq
import pytest

from backend.config import DB_FILENAME
from backend.export import export_dataset
from backend.review import ReviewError, apply_edit, read_review_file, review_decisions
from backend.store import Store

P = "lin"
TURNS = [{"role": "user", "content": "How do I open a store?"}, {"role": "assistant", "content": "Call open()."},
         {"role": "user", "content": "And close it?"}, {"role": "assistant", "content": "Call close()."}]


def row(i: int, *, chunk: str | None = None, messages=None) -> dict:
    return {"sample_id": f"s{i}", "split": "train" if i % 5 else "test", "chunk_id": chunk or f"c{i}",
            "path": f"doc{i % 3}.md", "task": "multiturn" if messages else "qa", "language": "en",
            "instruction": messages[0]["content"] if messages else f"question {i}", "input": "",
            "output": messages[-1]["content"] if messages else f"answer {i}", "messages": messages}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / DB_FILENAME)
    s.upsert_project(P, "/src", None)
    yield s
    s.close()


def synthesize(store, rows, runs, operation="synthesis"):
    """What `curate_runs` does for new samples: a version on the current one, holding its runs' samples and the new."""
    return store.create_dataset(P, rows, source_runs=runs, config={}, stats={}, parent=store.current_dataset(P),
                                operation=operation)


def test_every_version_names_its_parent_and_operation_and_the_last_made_is_current(store):
    assert store.current_dataset(P) is None
    v1 = synthesize(store, [row(i) for i in range(10)], ["synth-a"])
    v2 = store.derive_dataset(P, v1, rejects=["s3"], note="drop the bad one")
    v3 = synthesize(store, [row(i) for i in range(14)], ["synth-a", "synth-b"])
    listed = {d["version"]: d for d in store.datasets(P)}
    assert [(listed[v]["parent"], listed[v]["operation"]) for v in (v1, v2, v3)] == [
        (None, "synthesis"), (v1, "review"), (v2, "synthesis")]
    assert store.current_dataset(P) == v3 and [d["current"] for d in listed.values()] == [False, False, True]
    lineage = store.dataset_lineage(P, v3)
    assert [v["version"] for v in lineage["lineage"]] == [v3, v2, v1] and lineage["current"]
    assert lineage["left_out"] == []
    # v1 comes from before the review: a page warns with the review's note
    assert store.dataset_lineage(P, v1)["left_out"] == [{"version": v2, "note": "drop the bad one", "samples": 1}]
    store.set_current_dataset(P, v1)
    assert store.current_dataset(P) == v1 and store.stats(P)["dataset"] == v1
    with pytest.raises(KeyError):
        store.set_current_dataset(P, "v9")


def test_a_review_is_carried_into_a_later_version_until_its_source_changes(store):
    v1 = synthesize(store, [row(i) for i in range(10)] + [row(10, messages=TURNS)], ["synth-a"])
    v2 = store.derive_dataset(P, v1, edits={"s1": {"output": "a better answer"},
                                            "s10": {"messages": [*TURNS[:3], {"role": "assistant",
                                                                              "content": "close() flushes first."}]}},
                              rejects=["s2"], note="first pass")
    # a retry: the same samples again (curated together with the new ones), one of them from a changed chunk
    rows = [row(i) for i in range(14) if i not in (1, 10)] + [row(1, chunk="c1-changed"), row(10, messages=TURNS)]
    v3 = synthesize(store, rows, ["synth-a"], operation="retry")
    got = {r["sample_id"]: r for r in store.dataset_rows(P, v3)}
    assert "s2" not in got and {"s11", "s12", "s13"} <= set(got)  # the rejection kept, the new samples added
    assert got["s10"]["messages"][-1]["content"] == "close() flushes first." == got["s10"]["output"]
    assert got["s1"]["output"] == "answer 1"  # its source changed: the reviewer saw other text
    info = {d["version"]: d for d in store.datasets(P)}[v3]
    assert info["parent"] == v2 and info["operation"] == "retry"
    assert info["stats"]["review_carried"] == {"edited": 1, "rejected": 1}
    # a second review on top: both are carried
    v4 = store.derive_dataset(P, v3, edits={"s10": {"instruction": "How do I open it?"}})
    v5 = synthesize(store, rows, ["synth-a"])
    s10 = {r["sample_id"]: r for r in store.dataset_rows(P, v5)}["s10"]
    assert s10["messages"][0]["content"] == s10["instruction"] == "How do I open it?"
    assert s10["messages"][-1]["content"] == "close() flushes first."
    assert [v["version"] for v in store.dataset_lineage(P, v5)["lineage"]] == [v5, v4, v3, v2, v1]


def test_a_multi_turn_edit_reaches_every_export_format(store, tmp_path):
    v1 = synthesize(store, [row(0, messages=TURNS), row(1)], ["synth-a"])
    edited_turns = [TURNS[0], {"role": "assistant", "content": "Call open(path) with the home folder."}, *TURNS[2:]]
    v2 = store.derive_dataset(P, v1, edits={"s0": {"messages": edited_turns},
                                            "s1": {"output": "answer one, reviewed"}})
    rows = store.dataset_rows(P, v2)
    for fmt in ("sharegpt", "openai", "alpaca", "parquet"):
        out = tmp_path / fmt
        export_dataset(rows, fmt, out, f"{P}_{v2}")
        text = "".join(p.read_text() if p.suffix != ".parquet" else pq.read_table(p).to_pandas().to_json()
                       for p in out.iterdir() if p.stem in ("train", "test"))
        assert "with the home folder" in text, fmt
        assert "answer one, reviewed" in text, fmt
    # an instruction edit of a multi-turn sample is its first user turn too
    v3 = store.derive_dataset(P, v2, edits={"s0": {"instruction": "How do I open a DocTune store?"}})
    s0 = [r for r in store.dataset_rows(P, v3) if r["sample_id"] == "s0"][0]
    assert s0["messages"][0]["content"] == "How do I open a DocTune store?"
    assert s0["messages"][1]["content"] == "Call open(path) with the home folder."
    with pytest.raises(ValueError, match="single-turn"):
        store.derive_dataset(P, v3, edits={"s1": {"messages": TURNS}})


def test_review_lines_are_checked_with_their_file_and_line(tmp_path):
    edits, rejects = review_decisions([{"sample_id": "a", "output": "x"}, None, {"sample_id": "b", "reject": True}])
    assert edits == {"a": {"output": "x"}} and rejects == ["b"]
    with pytest.raises(ReviewError) as err:
        review_decisions([{"output": "x"}, {"sample_id": "a", "split": "test"}, {"sample_id": "b", "output": 3},
                          {"sample_id": "c", "messages": [{"role": "assistant", "content": "hi"}]},
                          {"sample_id": "d", "reject": True, "output": "y"}], "E.jsonl")
    lines = str(err.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [f"E.jsonl line {n}" for n in range(1, 6)]
    assert "sample_id is missing" in lines[0] and "field split cannot be edited" in lines[1]
    assert "field output must be text" in lines[2] and "alternate user/assistant" in lines[3]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sample_id": "a", "output": "x"}\n\n{"sample_id": "b", oops}\n')
    with pytest.raises(ReviewError, match=r"bad.jsonl line 3: not JSON"):
        read_review_file(bad)
    with pytest.raises(ReviewError, match="cannot be read"):
        read_review_file(tmp_path / "missing.jsonl")
    assert apply_edit(row(1), {"input": "ctx"})["input"] == "ctx"
