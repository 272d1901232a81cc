"""Ingestion settings: which files of a repository are read, and how documents are cut into chunks."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.config_base import Config

# Generated folders and files, skipped as "ignored" when `IngestConfig.skip_generated` is on.
GENERATED = ["__pycache__/", "*.pyc", "*.pyo", "node_modules/", ".venv/", "venv/", ".tox/", ".nox/",
             ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", "*.egg-info/", ".ipynb_checkpoints/"]


@dataclass
class ChunkConfig(Config):
    """How documents are cut into chunks."""

    max_tokens: int = field(default=512, metadata={"flag": "--max-tokens", "min": 16, "max": 100_000})
    """Upper bound on a chunk's tokens. Higher: more context per sample, fewer chunks, longer prompts."""
    overlap_tokens: int = field(default=64, metadata={"flag": "--overlap-tokens", "min": 0, "max": 50_000})
    """Tokens repeated between neighbouring pieces of one split section, so no sentence loses its context."""
    min_tokens: int = field(default=8, metadata={"min": 0, "max": 100_000})
    """Pieces smaller than this are merged into their neighbour (a lone heading makes a poor sample)."""
    tokenizer: str | None = field(default=None, metadata={"flag": "--tokenizer"})
    """A local tokenizer (folder with tokenizer.json, the file itself, or a model name already in the
    Hugging Face cache). None or not found locally: a fast estimate is used and says so."""

    def own_problems(self) -> list[str]:
        out = []
        if self.overlap_tokens >= self.max_tokens // 2:
            out.append(f"chunk.overlap_tokens={self.overlap_tokens} must be below half of max_tokens "
                       f"({self.max_tokens // 2}); try {min(64, self.max_tokens // 8)}")
        if self.min_tokens >= self.max_tokens:
            out.append(f"chunk.min_tokens={self.min_tokens} must be below max_tokens ({self.max_tokens})")
        return out


@dataclass
class IngestConfig(Config):
    """Which files of a repository are read, and the limits that keep bad input out (`doctune ingest`)."""

    section = "ingest"

    include: list[str] = field(default_factory=list, metadata={"flag": "--include"})
    """Gitignore-style globs; when given, only matching files are read (e.g. `docs/**`, `*.py`)."""
    exclude: list[str] = field(default_factory=list, metadata={"flag": "--exclude"})
    """Gitignore-style globs never read, on top of `.gitignore` files (e.g. `tests/**`)."""
    max_file_bytes: int = field(default=2_000_000, metadata={"flag": "--max-file-bytes", "min": 1, "max": 10**10})
    """Files larger than this are skipped with reason `too_large`. Raise it for huge generated docs."""
    respect_gitignore: bool = field(default=True, metadata={"flag": "--no-gitignore"})
    """Honour `.gitignore` files (the root's and nested ones) and always skip `.git/`."""
    skip_generated: bool = True
    """Also skip what is generated, never written: `__pycache__/`, `*.pyc`, `node_modules/`, virtualenvs,
    tool caches, `*.egg-info/` (the `GENERATED` list). Off: they are walked like any file."""
    batch_bytes: int = field(default=1_000_000, metadata={"min": 1, "max": 10**9})
    """Bytes of files sent to one parallel chunking task. Smaller: better balance, more overhead."""
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    """How the files read are cut into chunks. Changing a chunk setting or the tokenizer changes the chunker
    fingerprint, and the next ingest re-chunks every file."""

    def own_problems(self) -> list[str]:
        out = []
        for name in ("include", "exclude"):
            for glob in getattr(self, name):
                if not glob.strip():
                    out.append(f"ingest.{name} holds an empty glob; remove it")
        return out
