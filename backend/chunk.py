"""Chunking: sections → token-bounded chunks, and the batch function every chunking worker runs.

Input (one `FileItem` per file): path, kind, language, raw bytes, sha256, size, git commit.
Output of `chunk_files` (Arrow tables the store inserts as they are):
  files   one row per file: status ok, or skipped with reason invalid_utf8 / parse_error
  chunks  one row per chunk: path, ord, kind, heading_path, symbol, start_line, end_line,
          token_count, token_counter, text, chunk_id (stable hash of project, path, place in the file, text)

Sections that fit `max_tokens` stay whole; longer ones use their finer `parts` (Python classes)
or langchain's language-aware recursive splitter, measured in the same tokens, with overlap.
Pieces under `min_tokens` are merged into their neighbour.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache

import pyarrow as pa

from backend.ingest_config import ChunkConfig
from backend.readers import ReadError, Section, read_sections
from backend.tokens import TokenCounter, token_counter

# Bump when chunk boundaries change for the same settings, so re-ingest re-chunks every file.
CHUNKER_VERSION = 2  # 2: Markdown headings and fences from the CommonMark parser (backend/markdown.py)


@dataclass
class FileItem:
    path: str
    kind: str
    language: str | None
    data: bytes
    sha256: str
    size: int
    git_commit: str | None


@dataclass
class Chunk:
    heading_path: tuple[str, ...]
    text: str
    start_line: int
    end_line: int
    token_count: int
    symbol: str | None = None


FILE_SCHEMA = pa.schema([
    ("project", pa.string()), ("path", pa.string()), ("kind", pa.string()), ("language", pa.string()),
    ("size_bytes", pa.int64()), ("sha256", pa.string()), ("git_commit", pa.string()),
    ("status", pa.string()), ("skip_reason", pa.string()), ("skip_detail", pa.string()),
    ("n_chunks", pa.int32()), ("n_tokens", pa.int64()), ("chunker", pa.string()),
])
CHUNK_SCHEMA = pa.schema([
    ("chunk_id", pa.string()), ("project", pa.string()), ("path", pa.string()), ("file_sha256", pa.string()),
    ("ord", pa.int32()), ("kind", pa.string()), ("language", pa.string()),
    ("heading_path", pa.list_(pa.string())), ("symbol", pa.string()), ("start_line", pa.int32()),
    ("end_line", pa.int32()), ("token_count", pa.int32()), ("token_counter", pa.string()), ("text", pa.string()),
])


def chunker_fingerprint(cfg: ChunkConfig) -> str:
    """Identifies the settings that decide chunk boundaries (a change means re-chunking)."""
    counter = token_counter(cfg.tokenizer).name
    payload = json.dumps({"v": CHUNKER_VERSION, "counter": counter, **asdict(cfg)}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


@lru_cache(maxsize=64)
def _splitter(language: str, max_tokens: int, overlap: int, counter: TokenCounter):
    from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

    kwargs = dict(chunk_size=max_tokens, chunk_overlap=overlap, length_function=counter)
    if language:
        return RecursiveCharacterTextSplitter.from_language(Language(language), **kwargs)
    return RecursiveCharacterTextSplitter(**kwargs)


def chunk_sections(sections: list[Section], cfg: ChunkConfig, counter: TokenCounter) -> list[Chunk]:
    """Token-bounded chunks of one document's sections, in document order."""
    out: list[Chunk] = []
    for section in sections:
        out += _chunk_section(section, cfg, counter)
    return _merge_small(out, cfg, counter)


def _chunk_section(section: Section, cfg: ChunkConfig, counter: TokenCounter) -> list[Chunk]:
    # whitespace-separated words are a cheap lower bound on tokens: skip the exact count when it
    # already shows the section must be split
    n = cfg.max_tokens + 1 if len(section.text.split()) > cfg.max_tokens else counter(section.text)
    if n <= cfg.max_tokens:
        return [Chunk(section.heading_path, section.text, section.start_line, section.end_line, n, section.symbol)]
    if section.parts:
        return [c for part in section.parts for c in _chunk_section(part, cfg, counter)]
    pieces = []
    cursor = 0
    for text in _split_bounded(section.text, section.split_language, cfg.max_tokens, cfg.overlap_tokens, counter):
        # pieces come in order and may overlap, so each starts after the previous one's start
        at = section.text.find(text, cursor)
        at = at if at >= 0 else max(0, section.text.find(text))
        cursor = at + 1
        start = section.start_line + section.text.count("\n", 0, at)
        end = min(section.end_line, start + text.count("\n"))
        pieces.append(Chunk(section.heading_path, text, start, end, counter(text), section.symbol))
    return pieces


def _split_bounded(text: str, language: str, max_tokens: int, overlap: int, counter: TokenCounter) -> list[str]:
    """langchain's recursive split, then any piece still over the bound split again, smaller.

    langchain sums the tokens of the parts it joins, which is not the tokens of the joined text
    (BPE merges across a space), so a piece can come out a few tokens over.
    """
    out = []
    for piece in _splitter(language, max_tokens, overlap, counter).split_text(text):
        n = counter(piece)
        if n <= max_tokens:
            out.append(piece)
        else:
            smaller = max(4, max_tokens * max_tokens // n - 1)
            out += _split_bounded(piece, language, smaller, min(overlap, smaller // 4), counter)
    return out


def _merge_small(chunks: list[Chunk], cfg: ChunkConfig, counter: TokenCounter) -> list[Chunk]:
    """Fold chunks under min_tokens forward into the next one (or back into the last), when they fit."""
    out: list[Chunk] = []
    carry: Chunk | None = None
    for c in chunks:
        if carry is not None:
            text = carry.text + "\n\n" + c.text
            n = counter(text)
            if n <= cfg.max_tokens:
                c = Chunk(c.heading_path, text, carry.start_line, c.end_line, n, c.symbol or carry.symbol)
            else:
                out.append(carry)
            carry = None
        if c.token_count < cfg.min_tokens:
            carry = c
        else:
            out.append(c)
    if carry is not None:
        if out and counter(out[-1].text + "\n\n" + carry.text) <= cfg.max_tokens:
            last = out.pop()
            text = last.text + "\n\n" + carry.text
            carry = Chunk(last.heading_path, text, last.start_line, carry.end_line, counter(text), last.symbol)
        out.append(carry)
    return out


def chunk_id(project: str, path: str, ord_: int, text: str) -> str:
    """A chunk's stable id: a hash of its project, path, place in the file and text."""
    return hashlib.sha1(f"{project}\0{path}\0{ord_}\0{text}".encode()).hexdigest()[:20]


def chunk_files(project: str, items: list[FileItem], cfg: ChunkConfig) -> tuple[pa.Table, pa.Table]:
    """Decode, parse and chunk a batch of files; returns (files, chunks) tables.

    Nothing raises for a bad file: it becomes a `skipped` row with its reason and detail.
    """
    counter = token_counter(cfg.tokenizer)
    fingerprint = chunker_fingerprint(cfg)
    files: dict[str, list] = {name: [] for name in FILE_SCHEMA.names}
    chunks: dict[str, list] = {name: [] for name in CHUNK_SCHEMA.names}
    for item in items:
        kind, status, reason, detail, pieces = item.kind, "ok", None, None, []
        try:
            text = item.data.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
            kind, sections = read_sections(item.path, text, item.kind)
            pieces = chunk_sections(sections, cfg, counter)
        except UnicodeDecodeError as exc:
            status, reason = "skipped", "invalid_utf8"
            detail = f"byte {exc.start}: {exc.reason}; re-save the file as UTF-8"
        except (ReadError, RecursionError) as exc:
            status, reason, detail = "skipped", "parse_error", str(exc)[:500]
        row = dict(project=project, path=item.path, kind=kind, language=item.language, size_bytes=item.size,
                   sha256=item.sha256, git_commit=item.git_commit, status=status, skip_reason=reason,
                   skip_detail=detail, n_chunks=len(pieces), n_tokens=sum(p.token_count for p in pieces),
                   chunker=fingerprint)
        for name in FILE_SCHEMA.names:
            files[name].append(row[name])
        for ord_, piece in enumerate(pieces):
            values = dict(chunk_id=chunk_id(project, item.path, ord_, piece.text), project=project, path=item.path,
                          file_sha256=item.sha256, ord=ord_,
                          kind=kind, language=item.language, heading_path=list(piece.heading_path),
                          symbol=piece.symbol, start_line=piece.start_line, end_line=piece.end_line,
                          token_count=piece.token_count, token_counter=counter.name, text=piece.text)
            for name in CHUNK_SCHEMA.names:
                chunks[name].append(values[name])
    return pa.table(files, schema=FILE_SCHEMA), pa.table(chunks, schema=CHUNK_SCHEMA)
