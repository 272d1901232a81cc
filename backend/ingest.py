"""Ingestion: walk a repository, decide what to read, and record why anything is skipped.

`walk_repository` yields a `Candidate` for every file worth reading and a `Skipped` (with a reason
and a fix-it detail) for every file that is not; nothing raises for a bad file. `plan_ingest` then
reads the candidates, hashes them and compares with what the store already holds, so that
re-ingesting unchanged files does no work.

Skip reasons: empty, too_large, binary, unsupported_type, unreadable, not_regular_file,
broken_symlink, symlink_loop, symlink_outside_repo, and (from the chunkers) invalid_utf8, parse_error.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pathspec

from backend.chunk import FileItem
from backend.ingest_config import GENERATED, IngestConfig
from backend.readers import classify


class IngestError(Exception):
    """The repository as a whole cannot be ingested (e.g. the path does not exist)."""


@dataclass
class Candidate:
    path: str  # relative, POSIX separators
    abspath: Path
    size: int
    kind: str
    language: str | None


@dataclass
class Skipped:
    path: str
    reason: str
    detail: str
    kind: str | None = None
    size: int | None = None
    sha256: str | None = None


@dataclass
class IngestPlan:
    """What one ingest will do: files to chunk, files skipped, unchanged and gone ones."""

    root: Path
    git_commit: str | None
    to_chunk: list[FileItem] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    new: int = 0
    changed: int = 0
    ignored: int = 0


def git_commit(root: Path) -> str | None:
    """HEAD commit of the repository holding `root`, or None outside git."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _load_gitignore(directory: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        lines = (directory / ".gitignore").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


class _Filter:
    """.gitignore files (root and nested), --exclude and --include, in git's precedence."""

    def __init__(self, cfg: IngestConfig):
        self.cfg = cfg
        self.include = pathspec.GitIgnoreSpec.from_lines(cfg.include) if cfg.include else None
        excludes = cfg.exclude + (GENERATED if cfg.skip_generated else [])
        self.exclude = pathspec.GitIgnoreSpec.from_lines(excludes) if excludes else None

    def ignored(self, rel: str, is_dir: bool, specs: list[tuple[str, pathspec.GitIgnoreSpec]]) -> bool:
        probe = rel + "/" if is_dir else rel
        if is_dir and rel.split("/")[-1] == ".git":
            return True
        if self.exclude and self.exclude.match_file(probe):
            return True
        if self.cfg.respect_gitignore:
            verdict = None
            for base, spec in specs:  # deeper .gitignore files override shallower ones
                sub = probe[len(base) + 1:] if base else probe
                result = spec.check_file(sub)
                if result.include is not None:
                    verdict = result.include
            if verdict:
                return True
        if self.include and not is_dir and not self.include.match_file(rel):
            return True
        return False


def check_root(root: Path) -> Path:
    """`root` as a Path, once it is known to be a folder.

    Raises:
        IngestError: `root` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.exists():
        raise IngestError(f"{root} does not exist; pass the path of a repository folder")
    if not root.is_dir():
        raise IngestError(f"{root} is a file, not a folder; pass the repository's root folder")
    return root


def walk_repository(root: Path, cfg: IngestConfig) -> Iterator[Candidate | Skipped | None]:
    """Every file under `root`, as a Candidate, a Skipped with its reason, or None when ignored.

    Symlinks to files and folders inside the repository are followed once; loops, broken links and
    links leading outside the repository are skipped with their reason (nothing outside is read).

    Raises:
        IngestError: `root` does not exist or is not a folder.
    """
    root = check_root(root)
    real_root = root.resolve()
    flt = _Filter(cfg)
    visited: set[Path] = {real_root}

    def walk(directory: Path, rel_dir: str, specs: list) -> Iterator[Candidate | Skipped | None]:
        if cfg.respect_gitignore:
            spec = _load_gitignore(directory)
            if spec is not None:
                specs = specs + [(rel_dir, spec)]
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            yield Skipped(rel_dir or ".", "unreadable", f"cannot list folder: {exc.strerror}; check its permissions")
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            path = Path(entry.path)
            try:
                is_link = entry.is_symlink()
                st = os.stat(path) if is_link else entry.stat(follow_symlinks=False)
            except OSError as exc:
                if is_link:
                    yield _bad_link(path, rel, exc)
                else:
                    yield Skipped(rel, "unreadable", f"cannot stat: {exc.strerror}")
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if flt.ignored(rel, is_dir, specs):
                yield None
                continue
            if is_link:
                target = path.resolve()
                if not target.is_relative_to(real_root):
                    yield Skipped(rel, "symlink_outside_repo",
                                  f"points to {target}, outside the repository; copy the file in to ingest it")
                    continue
                if is_dir and (target in visited or real_root.is_relative_to(target)
                               or directory.resolve().is_relative_to(target)):
                    yield Skipped(rel, "symlink_loop", f"points to {target}, already walked; nothing to do")
                    continue
            if is_dir:
                real = path.resolve()
                if real in visited and is_link:
                    continue
                visited.add(real)
                yield from walk(path, rel, specs)
            elif not stat.S_ISREG(st.st_mode):
                yield Skipped(rel, "not_regular_file", "a FIFO, socket or device; only regular files are read")
            else:
                yield _classify_file(path, rel, st.st_size, cfg)

    yield from walk(root, "", [])


def _bad_link(path: Path, rel: str, exc: OSError) -> Skipped:
    import errno

    if exc.errno == errno.ELOOP:
        return Skipped(rel, "symlink_loop", f"symlink cycle at {os.readlink(path)}; remove or fix the link")
    return Skipped(rel, "broken_symlink", f"points to missing {os.readlink(path)}; remove or fix the link")


def _classify_file(path: Path, rel: str, size: int, cfg: IngestConfig) -> Candidate | Skipped:
    kind, language = classify(rel)
    if kind is None:
        return Skipped(rel, "unsupported_type", f"no reader for '{path.suffix or path.name}' files", size=size)
    if size == 0:
        return Skipped(rel, "empty", "file is empty", kind=kind, size=0)
    if size > cfg.max_file_bytes:
        return Skipped(rel, "too_large",
                       f"{size} bytes > max_file_bytes={cfg.max_file_bytes}; raise it with --max-file-bytes",
                       kind=kind, size=size)
    return Candidate(rel, path, size, kind, language)


def read_candidate(c: Candidate, commit: str | None) -> FileItem | Skipped:
    """Read and hash one candidate; unreadable or binary files become Skipped."""
    try:
        with open(c.abspath, "rb") as fh:
            data = fh.read(c.size + 1)
    except OSError as exc:
        return Skipped(c.path, "unreadable", f"{exc.strerror}; check the file's permissions", c.kind, c.size)
    sha = hashlib.sha256(data).hexdigest()
    if b"\0" in data[:8192]:
        return Skipped(c.path, "binary", "NUL bytes in the first 8 KiB; not a text file", c.kind, len(data), sha)
    return FileItem(c.path, c.kind, c.language, data, sha, len(data), commit)


def plan_ingest(root: Path, cfg: IngestConfig, known: dict[str, tuple[str | None, str | None, str]],
                fingerprint: str) -> IngestPlan:
    """Walk and read `root`; compare with `known` (path -> (sha256, chunker, status)) from the store.

    A file whose content hash and chunker fingerprint are unchanged is not read again into the plan's
    work; files the store knows that no longer exist are listed in `gone`.
    """
    plan = IngestPlan(root=Path(root).resolve(), git_commit=git_commit(Path(root)))
    seen: set[str] = set()
    for entry in walk_repository(Path(root), cfg):
        if entry is None:
            plan.ignored += 1
            continue
        seen.add(entry.path)
        item = entry if isinstance(entry, Skipped) else read_candidate(entry, plan.git_commit)
        if isinstance(item, Skipped):
            plan.skipped.append(item)
            continue
        old = known.get(item.path)
        if old is not None and old[2] != "gone" and old[0] == item.sha256 and old[1] == fingerprint:
            plan.unchanged.append(item.path)
            continue
        if old is None or old[2] == "gone":
            plan.new += 1
        else:
            plan.changed += 1
        plan.to_chunk.append(item)
    plan.gone = sorted(p for p, (_, _, status) in known.items() if status != "gone" and p not in seen)
    return plan


def batch_items(items: list[FileItem], batch_bytes: int) -> list[list[FileItem]]:
    """Group files into batches of about `batch_bytes`, largest files first so long tasks start early."""
    batches: list[list[FileItem]] = []
    current: list[FileItem] = []
    size = 0
    for item in sorted(items, key=lambda i: -i.size):
        current.append(item)
        size += item.size
        if size >= batch_bytes:
            batches.append(current)
            current, size = [], 0
    if current:
        batches.append(current)
    return batches


def skipped_table(project: str, skipped: list[Skipped], commit: str | None, fingerprint: str):
    """Arrow rows for skipped files, in the store's `files` layout."""
    import pyarrow as pa

    from backend.chunk import FILE_SCHEMA

    rows = [dict(project=project, path=s.path, kind=s.kind, language=None, size_bytes=s.size, sha256=s.sha256,
                 git_commit=commit, status="skipped", skip_reason=s.reason, skip_detail=s.detail, n_chunks=0,
                 n_tokens=0, chunker=fingerprint) for s in skipped]
    return pa.Table.from_pylist(rows, schema=FILE_SCHEMA)
