"""The refresh plan on real chunks (`chunk_files`) and real request keys (`plan_units`), without Ray or a server."""

import hashlib

from backend.chunk import FileItem, chunk_files
from backend.curate import curate
from backend.curate_config import CurateConfig
from backend.ingest_config import ChunkConfig
from backend.refresh import changed_files, file_splits, plan_refresh
from backend.synth_config import SynthConfig
from backend.synthesize import plan_units

CFG = SynthConfig(generator="openai", probe_share=0.0, min_chunk_tokens=0)
PAGES = {
    "docs/a.md": "# Docks\n\nBook a dock door with `book(door, window)`; windows are 30 minutes long.\n\n"
                 "## Cancelling\n\nCancel a booking with `cancel(booking)` up to 2 hours before its window opens.\n",
    "docs/b.md": "# Customs\n\nA held container stays in the yard until customs releases it; the hold code says "
                 "why.\n\n## Release\n\nCall `release(container)` once the broker has cleared the hold code.\n",
}


def chunks_of(pages: dict[str, str]) -> list[dict]:
    items = [FileItem(p, "markdown", None, t.encode(), hashlib.sha256(t.encode()).hexdigest(), len(t), "c1")
             for p, t in pages.items()]
    rows = chunk_files("p", items, ChunkConfig(min_tokens=1))[1].to_pylist()
    return sorted((dict(r, git_commit="c1") for r in rows), key=lambda c: (c["path"], c["ord"]))


def corpus(pages: dict[str, str]) -> dict[str, str]:
    return {p: hashlib.sha256(t.encode()).hexdigest() for p, t in pages.items()}


def version_of(pages: dict[str, str], splits: dict[str, str]) -> list[dict]:
    """One row per request, as a synthesis would leave them."""
    return [{"sample_id": f"s{i}", "cache_key": u.cache_key, "chunk_id": u.chunk_id, "path": u.path, "task": u.task,
             "split": splits[u.path], "start_line": u.start_line, "end_line": u.end_line}
            for i, u in enumerate(plan_units(chunks_of(pages), CFG, "p"))]


def test_changed_files_pairs_a_deleted_file_with_its_copy_as_a_rename():
    old = {"a.md": "1", "b.md": "2", "c.md": "3"}
    new = {"a.md": "1", "b.md": "9", "d.md": "3", "e.md": "4"}
    c = changed_files(old, new)
    assert (c.added, c.changed, c.deleted, c.renamed) == (["d.md", "e.md"], ["b.md"], ["c.md"], [("c.md", "d.md")])
    assert not changed_files(old, old).any()


def test_a_file_with_only_probes_counts_as_a_train_file():
    rows = [{"path": "a", "split": "probe"}, {"path": "b", "split": "test"}, {"path": "a", "split": "train"}]
    assert file_splits(rows) == {"a": "train", "b": "test"}


def test_only_the_changed_section_is_asked_again():
    rows = version_of(PAGES, {"docs/a.md": "train", "docs/b.md": "test"})
    edited = dict(PAGES, **{"docs/a.md": PAGES["docs/a.md"].replace("2 hours", "4 hours")})
    plan = plan_refresh(rows, rows, set(), chunks_of(edited), changed_files(corpus(PAGES), corpus(edited)), CFG, "p")
    assert plan.files.changed == ["docs/a.md"]
    assert {r["path"] for r in plan.retire} == {"docs/a.md"} and plan.retire
    assert {u.path for u in plan.todo} == {"docs/a.md"} and len(plan.todo) == len(plan.retire)
    assert len(plan.keep) == len(rows) - len(plan.retire) and not plan.revived
    assert plan.splits == {"docs/a.md": "train", "docs/b.md": "test"}

    # nothing changed: nothing to do
    same = plan_refresh(rows, rows, set(), chunks_of(PAGES), changed_files(corpus(PAGES), corpus(PAGES)), CFG, "p")
    assert same.nothing_changed and not same.todo and len(same.keep) == len(rows)


def test_text_that_only_moved_is_kept_with_its_new_lines():
    rows = version_of(PAGES, {"docs/a.md": "train", "docs/b.md": "test"})
    lines = {r["sample_id"]: r["end_line"] for r in rows}
    # a paragraph more in the first section, then a whole new section before the last: its place and lines move
    moved = dict(PAGES, **{"docs/b.md": PAGES["docs/b.md"].replace("why.\n", "why.\n\nHolds last 2 days.\n").replace(
        "## Release", "## Fees\n\nA hold costs 40 EUR a day, billed to the consignee.\n\n## Release")})
    now = chunks_of(moved)
    plan = plan_refresh(rows, rows, set(), now, changed_files(corpus(PAGES), corpus(moved)), CFG, "p")
    release = [r for r in plan.keep if r["path"] == "docs/b.md"]
    assert release and all(r["end_line"] == lines[r["sample_id"]] + 6 for r in release)
    assert not {r["chunk_id"] for r in release} & {c["chunk_id"] for c in now}  # its chunk id moved with its place
    assert {r["cache_key"] for r in release} <= {u.cache_key for u in plan_units(now, CFG, "p")}
    assert plan.retire and all(r["start_line"] == 1 and r["path"] == "docs/b.md" for r in plan.retire)
    assert {u.start_line for u in plan.todo if u.path == "docs/b.md"} == {1, 7}  # the edited and the new section


def test_a_rename_carries_the_samples_and_their_split_and_asks_nothing():
    rows = version_of(PAGES, {"docs/a.md": "train", "docs/b.md": "test"})
    renamed = {"docs/a.md": PAGES["docs/a.md"], "docs/customs.md": PAGES["docs/b.md"]}
    plan = plan_refresh(rows, rows, set(), chunks_of(renamed), changed_files(corpus(PAGES), corpus(renamed)), CFG,
                        "p")
    assert plan.files.renamed == [("docs/b.md", "docs/customs.md")]
    assert not plan.todo and not plan.retire
    assert {r["path"] for r in plan.carried} == {"docs/customs.md"} and plan.splits["docs/customs.md"] == "test"
    # the next refresh finds the carried samples' chunks unchanged
    again = plan_refresh(plan.keep + plan.carried, rows, set(), chunks_of(renamed), changed_files(corpus(renamed),
                         corpus(renamed)), CFG, "p")
    assert again.nothing_changed and not again.todo and len(again.keep) == len(rows)


def test_a_placed_file_keeps_its_split_when_all_its_samples_are_new():
    samples = [{"sample_id": f"{p}{i}", "path": p, "task": "qa", "instruction": f"How does {p} handle case {i}?",
                "input": "", "output": f"File {p} handles case {i} by calling handler_{p}_{i}() first."}
               for p in "abcdefghij" for i in range(3)]
    free = curate(samples, CurateConfig())
    where = {r["path"]: r["split"] for r in free.kept}
    moved = next(p for p, s in where.items() if s == "train")
    placed = curate(samples, CurateConfig(), placed={moved: "test"})
    assert {r["split"] for r in placed.kept if r["path"] == moved} == {"test"}
