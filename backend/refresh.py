"""Refresh: what a dataset version needs after the repository changed, and nothing more.

A version's rows each name the request that made them (`cache_key`, a hash of the prompt: the chunk's text, its
path and heading, the task and the config). After a re-ingest the current chunks are planned again
(`plan_units`, the same seeded task draw):

- a row whose request is still planned is **kept** as it is (same id, same split); only its provenance follows
  the text (lines, commit and file hash where that text is now). The prompt names the chunk's lines, so text that
  only moved (an edit above it) is found by its prompt at the row's old lines, and kept too;
- a row whose request is no longer planned (its chunk's text changed, or its file is gone) is **retired**;
- a row of a **renamed** file (deleted, and the same content added under another path) is carried to the new
  path: no request is paid for text the dataset already has;
- a planned request no source run of the version ever made is **to do** (its response may still be cached);
- a sample of the version's source runs that curation left out of it (a duplicate, say) and whose request is still
  planned is **revived**: curated again with the new samples, as a synthesis from scratch would.

Files keep their split across versions (`file_splits`); a new file gets one by curation's seeded rule.
`changed_files` compares two corpora (path -> sha256), e.g. two versions, or a version and the repository on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.chunk import chunk_id
from backend.curate_config import PROBE_SPLIT
from backend.synth_config import SynthConfig
from backend.synthesize import (PromptTemplate, Unit, cache_key, load_template, plan_units, render_messages,
                                request_params)


@dataclass
class FileChanges:
    """Files added, changed (other content) and deleted between two corpora, each sorted; `renamed` pairs
    (old, new) a deleted file with an added one of the same content (both also listed as deleted and added)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)

    def any(self) -> bool:
        return bool(self.added or self.changed or self.deleted)

    def as_dict(self) -> dict:
        return {"added": self.added, "changed": self.changed, "deleted": self.deleted,
                "renamed": [list(p) for p in self.renamed]}


def changed_files(old: dict[str, str], new: dict[str, str]) -> FileChanges:
    """What changed from corpus `old` to corpus `new`, each a map path -> sha256 of the file's content."""
    added = sorted(set(new) - set(old))
    deleted = sorted(set(old) - set(new))
    changed = sorted(p for p in set(old) & set(new) if old[p] != new[p])
    by_hash: dict[str, list[str]] = {}
    for p in added:
        by_hash.setdefault(new[p], []).append(p)
    renamed = []
    for p in deleted:  # each added copy pairs with one deleted file, in path order
        twins = by_hash.get(old[p])
        if twins:
            renamed.append((p, twins.pop(0)))
    return FileChanges(added, changed, deleted, renamed)


def file_splits(rows: list[dict]) -> dict[str, str]:
    """path -> the split a version put the file in (a file with only probes is a train file)."""
    out: dict[str, str] = {}
    for r in rows:
        if r.get("path") and (r["split"] != PROBE_SPLIT or r["path"] not in out):
            out[r["path"]] = "train" if r["split"] == PROBE_SPLIT else r["split"]
    return out


@dataclass
class RefreshPlan:
    files: FileChanges
    keep: list[dict]
    """The version's rows that stay (same ids and splits), their provenance moved to where their text is now."""
    carried: list[dict]
    """Rows of renamed files, now under their new path."""
    revived: list[dict]
    """Samples of the version's source runs not in it whose requests are still planned: curated again."""
    retire: list[dict]
    """Rows whose source text changed or is gone."""
    todo: list[Unit]
    """Requests to make (a cached one costs nothing)."""
    splits: dict[str, str]
    """path -> split every file already placed keeps (renamed files keep their old one)."""

    @property
    def nothing_changed(self) -> bool:
        """No file changed and no row to retire: no request, no new version."""
        return not self.files.any() and not self.retire

    def summary(self) -> dict:
        return {**self.files.as_dict(), "keep": len(self.keep), "carried": len(self.carried),
                "revived": len(self.revived), "retire": len(self.retire),
                "retired_samples": sorted(r["sample_id"] for r in self.retire), "units": len(self.todo),
                "nothing_changed": self.nothing_changed}


def plan_refresh(rows: list[dict], earlier: list[dict], dead_keys: set[str], chunks: list[dict], files: FileChanges,
                 cfg: SynthConfig, project: str) -> RefreshPlan:
    """What refreshing a version takes.

    Args:
        rows: the version's rows (`cache_key`, `chunk_id`, `path`, `split`, provenance...).
        earlier: the samples of the version's source runs (those curation dropped included).
        dead_keys: cache keys of the source runs' dead letters. With the samples' keys, the requests never made
            again.
        chunks: the project's chunks after the re-ingest, in (path, ord) order.
        files: the version's files against the re-ingested ones (`changed_files`).
    """
    units = plan_units(chunks, cfg, project)
    known_keys = dead_keys | {s["cache_key"] for s in earlier}
    find = _UnitFinder(units, cfg, project)
    by_chunk = {c["chunk_id"]: c for c in chunks}
    keep, retire, renamed_before = [], [], set()
    for r in rows:
        u = find(r)
        if u is not None:
            keep.append(_moved(r, u.start_line, u.end_line, u.source_commit, u.file_sha256, cache_key=u.cache_key))
        elif r.get("chunk_id") in by_chunk:  # carried by an earlier rename: its chunk is unchanged
            c = by_chunk[r["chunk_id"]]
            keep.append(_moved(r, c["start_line"], c["end_line"], c.get("git_commit"), c["file_sha256"]))
            renamed_before.add(c["chunk_id"])
        else:
            retire.append(r)
    splits = file_splits(rows)
    carried, covered = _carry_renamed(retire, known_keys, chunks, files.renamed, cfg, project)
    covered |= renamed_before
    for old, new in files.renamed:
        if old in splits:
            splits[new] = splits[old]
    moved = {r["sample_id"] for r in carried}
    retire = [r for r in retire if r["sample_id"] not in moved]
    in_version = {r["sample_id"] for r in rows}
    revived = [_moved(s, u.start_line, u.end_line, u.source_commit, u.file_sha256, cache_key=u.cache_key)
               for s in earlier if s["sample_id"] not in in_version and (u := find(s)) is not None]
    known_keys |= {r["cache_key"] for r in keep + revived}
    todo = [u for u in units if u.cache_key not in known_keys and u.chunk_id not in covered]
    return RefreshPlan(files, keep, carried, revived, retire, todo, splits)


class _UnitFinder:
    """The planned request that made a sample: the one of its cache key, or, when only the lines of its text moved
    (the prompt names them), the one of its file and task whose prompt at the sample's old lines is its request."""

    def __init__(self, units: list[Unit], cfg: SynthConfig, project: str):
        self.cfg, self.project, self.params = cfg, project, request_params(cfg)
        self.by_key = {u.cache_key: u for u in units}
        self.by_place: dict[tuple[str, str], list[Unit]] = {}
        for u in units:
            self.by_place.setdefault((u.path, u.task), []).append(u)
        self.templates: dict[str, PromptTemplate] = {}

    def __call__(self, sample: dict) -> Unit | None:
        u = self.by_key.get(sample.get("cache_key"))
        if u is not None:
            return u
        return next((u for u in self.by_place.get((sample.get("path"), sample.get("task")), [])
                     if self.key_at(u, sample.get("start_line"), sample.get("end_line")) == sample.get("cache_key")),
                    None)

    def key_at(self, u: Unit, start: int, end: int) -> str:
        """`u`'s cache key had its text stood at lines start-end."""
        if u.task not in self.templates:
            self.templates[u.task] = load_template(self.cfg.prompts_dir, u.task)
        chunk = {"heading_path": [u.heading] if u.heading else [], "path": u.path, "start_line": start,
                 "end_line": end, "text": u.text}
        messages = render_messages(self.templates[u.task], chunk, self.cfg, self.project)
        return cache_key(self.cfg.model_name(), messages, self.params, u.index)


def _moved(row: dict, start: int, end: int, commit: str | None, sha: str | None, **more) -> dict:
    return dict(row, start_line=start, end_line=end, source_commit=commit, file_sha256=sha, **more)


def _carry_renamed(retired: list[dict], known_keys: set[str], chunks: list[dict], renamed: list[tuple[str, str]],
                   cfg: SynthConfig, project: str) -> tuple[list[dict], set[str]]:
    """The retired rows a rename explains, moved to the new path; and the new path's chunks needing no request.

    The new file's chunks are planned as if still at the old path: the requests that match a retired row's are the
    ones that made it, and a chunk all of whose requests were made under the old path is covered."""
    by_key: dict[str, list[dict]] = {}
    for r in retired:
        by_key.setdefault(r.get("cache_key"), []).append(r)
    carried, covered = [], set()
    for old, new in renamed:
        mine = [c for c in chunks if c["path"] == new]
        ghosts = [dict(c, path=old, chunk_id=chunk_id(project, old, c["ord"], c["text"])) for c in mine]
        chunk_of = {g["chunk_id"]: c for g, c in zip(ghosts, mine)}
        unknown = set()
        for u in plan_units(ghosts, cfg, project):
            c = chunk_of[u.chunk_id]
            if u.cache_key not in known_keys:
                unknown.add(c["chunk_id"])
            for r in by_key.pop(u.cache_key, []):
                carried.append(_moved(r, c["start_line"], c["end_line"], c.get("git_commit"), c["file_sha256"],
                                      path=new, chunk_id=c["chunk_id"]))
        covered |= {c["chunk_id"] for c in mine} - unknown
    return carried, covered
