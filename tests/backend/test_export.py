import hashlib
import json
import os
from pathlib import Path

import pytest

from backend.export import PROVENANCE_KEYS, export_dataset

datasets = pytest.importorskip("datasets")

ZH_Q = "如何在 tidemark 中预订码头泊位？"
ZH_A = "使用 `DockSchedule.book()` 预订泊位，时间窗口以分钟为单位。"


def sample(sid: str, split: str, **over) -> dict:
    base = dict(sample_id=sid, project="tidemark", run_id="run-1", chunk_id=f"chunk-{sid}", path=f"docs/{sid}.md",
                start_line=3, end_line=9, task="qa", language="en", instruction=f"What does {sid} do?", input="",
                output=f"It does {sid}.", messages=None, generator="deepseek-chat", template_version="qa-v1",
                split=split, judge_score=8.0, exec_status=None, source_commit="c0ffee1", file_sha256=f"sha-{sid}")
    base.update(over)
    return base


MULTI = [{"role": "user", "content": "How do I book a dock door?"},
         {"role": "assistant", "content": "Call `schedule.book(door, window)`."},
         {"role": "user", "content": ZH_Q},
         {"role": "assistant", "content": ZH_A}]


def dataset() -> list[dict]:
    return [
        sample("t1", "train"),
        sample("t2", "train", input="def quote(lane):\n    ...", task="explain"),
        sample("t3", "train", task="multiturn", instruction="", output="", messages=MULTI),
        sample("t4", "train", language="zh", instruction=ZH_Q, output=ZH_A),
        sample("v1", "val"),
        sample("s1", "test", language="zh", instruction=ZH_Q, output=ZH_A),
        sample("s2", "test"),
    ]


COUNTS = {"train": 4, "val": 1, "test": 2}


_CACHE: list[Path] = []


def load(out: Path, split: str, fmt: str):
    kind, ext = ("parquet", "parquet") if fmt == "parquet" else ("json", "jsonl")
    return datasets.load_dataset(kind, data_files={split: str(out / f"{split}.{ext}")}, split=split,
                                 cache_dir=str(_CACHE[-1]))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path_factory):
    # datasets caches what it loads; keep that out of the user's home
    _CACHE.append(tmp_path_factory.mktemp("hf-cache"))
    yield
    _CACHE.pop()


EXPECTED_COLUMNS = {
    "alpaca": {"instruction", "input", "output", "history"},
    "sharegpt": {"conversations"},
    "openai": {"messages"},
    "parquet": {"sample_id", "split", "task", "language", "system", "instruction", "input", "output", "history",
                "messages", "project", "path", "start_line", "end_line", "chunk_id", "run_id", "generator",
                "template_version", "fact", "source_commit", "file_sha256"},
}


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "openai", "parquet"])
def test_every_format_loads_with_datasets(tmp_path, fmt):
    out = tmp_path / "export"
    written = export_dataset(dataset(), fmt, out, "tidemark")
    ext = "parquet" if fmt == "parquet" else "jsonl"
    assert [p.name for p in written] == [f"train.{ext}", f"val.{ext}", f"test.{ext}", "train.provenance.jsonl",
                                         "val.provenance.jsonl", "test.provenance.jsonl", "dataset_info.json",
                                         "manifest.json"]
    assert not list(out.glob("*.tmp"))
    for split, n in COUNTS.items():
        ds = load(out, split, fmt)
        assert ds.num_rows == n
        if fmt == "alpaca" and split != "train":
            # history appears only in files holding a conversation
            assert set(ds.column_names) == {"instruction", "input", "output"}
        else:
            assert set(ds.column_names) == EXPECTED_COLUMNS[fmt]


def test_dataset_info_names_existing_files(tmp_path):
    for fmt in ("alpaca", "sharegpt", "openai", "parquet"):
        out = tmp_path / fmt
        export_dataset(dataset(), fmt, out, "tidemark", system_prompt="You know tidemark.")
        info = json.loads((out / "dataset_info.json").read_text())
        assert set(info) == {"tidemark_train", "tidemark_val", "tidemark_test"}
        for key, entry in info.items():
            assert (out / entry["file_name"]).is_file()
            assert entry["file_name"].startswith(key.removeprefix("tidemark_") + ".")
            assert entry["formatting"] == ("sharegpt" if fmt in ("sharegpt", "openai") else "alpaca")
        train = info["tidemark_train"]
        if fmt == "alpaca":
            assert train["columns"] == {"prompt": "instruction", "query": "input", "response": "output",
                                        "history": "history", "system": "system"}
        elif fmt == "sharegpt":
            assert train["columns"] == {"messages": "conversations", "system": "system"}
            assert train["tags"]["role_tag"] == "from" and train["tags"]["user_tag"] == "human"
            assert train["tags"]["assistant_tag"] == "gpt"
        elif fmt == "openai":
            assert train["columns"] == {"messages": "messages"}
            assert train["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                     "assistant_tag": "assistant", "system_tag": "system"}
        else:
            assert train["file_name"] == "train.parquet"
            assert train["columns"]["prompt"] == "instruction" and train["columns"]["history"] == "history"


def test_manifest_counts_and_hashes(tmp_path):
    written = export_dataset(dataset(), "sharegpt", tmp_path, "tidemark")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["name"] == "tidemark" and manifest["format"] == "sharegpt"
    assert manifest["counts"] == COUNTS and manifest["total"] == 7
    assert manifest["created_at"].endswith("+00:00")
    assert set(manifest["files"]) == {p.name for p in written[:-1]}
    for name, meta in manifest["files"].items():
        data = (tmp_path / name).read_bytes()
        assert meta == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_unicode_round_trips_unescaped(tmp_path):
    export_dataset(dataset(), "alpaca", tmp_path, "tidemark")
    raw = (tmp_path / "test.jsonl").read_text(encoding="utf-8")
    assert ZH_Q in raw and "\\u" not in raw
    ds = load(tmp_path, "test", "alpaca")
    assert ds[0]["instruction"] == ZH_Q and ds[0]["output"] == ZH_A
    export_dataset(dataset(), "parquet", tmp_path / "pq", "tidemark")
    assert load(tmp_path / "pq", "test", "parquet")[0]["output"] == ZH_A


def test_single_turn_rows(tmp_path):
    rows = {}
    for fmt in ("alpaca", "sharegpt", "openai"):
        export_dataset(dataset(), fmt, tmp_path / fmt, "tidemark")
        rows[fmt] = jsonl(tmp_path / fmt / "train.jsonl")[1]  # t2: has an input
    assert rows["alpaca"] == {"instruction": "What does t2 do?", "input": "def quote(lane):\n    ...",
                              "output": "It does t2.", "history": []}
    assert rows["sharegpt"] == {"conversations": [
        {"from": "human", "value": "What does t2 do?\n\ndef quote(lane):\n    ..."},
        {"from": "gpt", "value": "It does t2."}]}
    assert rows["openai"] == {"messages": [
        {"role": "user", "content": "What does t2 do?\n\ndef quote(lane):\n    ..."},
        {"role": "assistant", "content": "It does t2."}]}


def test_multiturn_rows_in_every_format(tmp_path):
    out = {}
    for fmt in ("alpaca", "sharegpt", "openai", "parquet"):
        export_dataset(dataset(), fmt, tmp_path / fmt, "tidemark", system_prompt="You know tidemark.")
    out["alpaca"] = jsonl(tmp_path / "alpaca" / "train.jsonl")[2]
    assert out["alpaca"] == {"instruction": ZH_Q, "input": "", "output": ZH_A, "system": "You know tidemark.",
                             "history": [["How do I book a dock door?", "Call `schedule.book(door, window)`."]]}
    sharegpt = jsonl(tmp_path / "sharegpt" / "train.jsonl")[2]
    assert sharegpt["system"] == "You know tidemark."
    assert [(t["from"], t["value"]) for t in sharegpt["conversations"]] == [
        ("human", MULTI[0]["content"]), ("gpt", MULTI[1]["content"]), ("human", ZH_Q), ("gpt", ZH_A)]
    openai = jsonl(tmp_path / "openai" / "train.jsonl")[2]
    assert openai["messages"] == [{"role": "system", "content": "You know tidemark."}] + MULTI
    row = load(tmp_path / "parquet", "train", "parquet")[2]
    assert row["sample_id"] == "t3" and row["instruction"] == ZH_Q and row["output"] == ZH_A
    assert row["history"] == [["How do I book a dock door?", "Call `schedule.book(door, window)`."]]
    assert json.loads(row["messages"]) == MULTI
    assert row["path"] == "docs/t3.md" and row["start_line"] == 3 and row["system"] == "You know tidemark."
    # the datasets loader reads the conversation back intact
    ds = load(tmp_path / "sharegpt", "train", "sharegpt")
    assert ds[2]["conversations"][3]["value"] == ZH_A
    assert ds[0]["system"] == "You know tidemark."


def test_own_system_message_wins_over_the_default(tmp_path):
    own = [{"role": "system", "content": "Answer in Chinese."}] + MULTI
    samples = [sample("a", "train", task="multiturn", messages=own), sample("b", "train")]
    export_dataset(samples, "openai", tmp_path, "x", system_prompt="Default.")
    rows = jsonl(tmp_path / "train.jsonl")
    assert rows[0]["messages"][0] == {"role": "system", "content": "Answer in Chinese."}
    assert rows[1]["messages"][0] == {"role": "system", "content": "Default."}


def test_provenance_sidecar_matches_rows(tmp_path):
    export_dataset(dataset(), "openai", tmp_path, "tidemark")
    prov = jsonl(tmp_path / "train.provenance.jsonl")
    assert [p["sample_id"] for p in prov] == ["t1", "t2", "t3", "t4"]
    assert set(prov[0]) == set(PROVENANCE_KEYS)
    assert prov[2] == {"sample_id": "t3", "path": "docs/t3.md", "start_line": 3, "end_line": 9,
                       "source_commit": "c0ffee1", "file_sha256": "sha-t3", "chunk_id": "chunk-t3",
                       "run_id": "run-1", "generator": "deepseek-chat", "template_version": "qa-v1",
                       "task": "multiturn", "fact": None}
    # the data rows themselves carry no provenance
    assert all(set(r) == {"messages"} for r in jsonl(tmp_path / "train.jsonl"))


def test_bad_input_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        export_dataset(dataset(), "csv", tmp_path, "x")
    with pytest.raises(ValueError, match="without a split"):
        export_dataset([dict(sample("a", "train"), split=None)], "alpaca", tmp_path, "x")
    broken = sample("a", "train", task="multiturn", messages=MULTI[:3])
    with pytest.raises(ValueError, match="alternate"):
        export_dataset([broken], "sharegpt", tmp_path, "x")


def test_only_present_splits_are_written(tmp_path):
    written = export_dataset([sample("a", "train"), sample("b", "holdout")], "alpaca", tmp_path, "x")
    assert [p.name for p in written[:2]] == ["train.jsonl", "holdout.jsonl"]
    assert json.loads((tmp_path / "manifest.json").read_text())["counts"] == {"train": 1, "holdout": 1}
    assert not (tmp_path / "val.jsonl").exists()


# --- a safe destination ---------------------------------------------------------------------------

def test_a_folder_that_holds_files_is_refused_unless_forced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"is not empty \(1 entries: notes.txt\).*--force"):
        export_dataset(dataset(), "alpaca", tmp_path, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    written = export_dataset(dataset(), "alpaca", tmp_path, "x", force=True)
    again = export_dataset(dataset(), "sharegpt", tmp_path, "x", force=True)  # DocTune's own files are replaced
    assert [p.name for p in again] == [p.name for p in written]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in written] + ["notes.txt"])


@pytest.mark.parametrize("where,said", [("file", "is a file, not a folder"), ("/dev/null", "is a device"),
                                        ("/proc/self", "is under /proc"), ("/sys/x", "is under /sys")])
def test_a_destination_that_is_no_folder_of_yours_is_refused(tmp_path, where, said):
    out = tmp_path / "file" if where == "file" else Path(where)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match=said):
        export_dataset(dataset(), "alpaca", out, "x")
    assert (tmp_path / "file").read_text() == "not a folder"


def test_links_planted_in_the_folder_are_replaced_never_written_through(tmp_path):
    victim, out = tmp_path / "victim.txt", tmp_path / "out"
    victim.write_text("precious")
    out.mkdir()
    for name in ("train.jsonl.tmp", "manifest.json.tmp", "train.jsonl", "dataset_info.json"):
        (out / name).symlink_to(victim)
    export_dataset(dataset(), "alpaca", out, "x", force=True)
    assert victim.read_text() == "precious"
    assert not (out / "train.jsonl").is_symlink() and (out / "train.jsonl").stat().st_size > 0
    assert (out / "train.jsonl.tmp").is_symlink()  # never touched: the temporary files have names of their own
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    assert (out / "train.jsonl").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
