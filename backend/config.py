"""Typed configuration: where DocTune keeps its data, and the knobs of ingestion and chunking.

Every config is a dataclass whose field comments are its documentation (the README's config
reference mirrors them). `validate()` collects every problem and raises once, each with its fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO_ROOT / "data" / "runtime"
SAMPLE_REPO = REPO_ROOT / "data" / "sample_repo"
DB_FILENAME = "doctune.duckdb"


# Generated folders and files, skipped as "ignored" when `IngestConfig.skip_generated` is on.
GENERATED = ["__pycache__/", "*.pyc", "*.pyo", "node_modules/", ".venv/", "venv/", ".tox/", ".nox/",
             ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", "*.egg-info/", ".ipynb_checkpoints/"]


class ConfigError(ValueError):
    """A config with one or more problems; the message lists each with its fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """The DocTune home folder: `--home`, else `DOCTUNE_HOME`, else `data/runtime` in the checkout."""
    chosen = home or os.environ.get("DOCTUNE_HOME") or DEFAULT_HOME
    path = Path(chosen).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class ChunkConfig:
    """How documents are cut into chunks."""

    max_tokens: int = 512
    """Upper bound on a chunk's tokens. Higher: more context per sample, fewer chunks, longer prompts."""
    overlap_tokens: int = 64
    """Tokens repeated between neighbouring pieces of one split section, so no sentence loses its context."""
    min_tokens: int = 8
    """Pieces smaller than this are merged into their neighbour (a lone heading makes a poor sample)."""
    tokenizer: str | None = None
    """A local tokenizer (folder with tokenizer.json, the file itself, or a model name already in the
    Hugging Face cache). None or not found locally: a fast estimate is used and says so."""

    def problems(self) -> list[str]:
        out = []
        if self.max_tokens < 16:
            out.append(f"chunk.max_tokens={self.max_tokens} is below 16; use at least 16 (512 is typical)")
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            out.append(
                f"chunk.overlap_tokens={self.overlap_tokens} must be >= 0 and below half of "
                f"max_tokens ({self.max_tokens // 2}); try {min(64, self.max_tokens // 8)}"
            )
        if not 0 <= self.min_tokens < self.max_tokens:
            out.append(f"chunk.min_tokens={self.min_tokens} must be >= 0 and below max_tokens")
        return out


@dataclass
class IngestConfig:
    """Which files of a repository are read, and the limits that keep bad input out."""

    include: list[str] = field(default_factory=list)
    """Gitignore-style globs; when given, only matching files are read (e.g. `docs/**`, `*.py`)."""
    exclude: list[str] = field(default_factory=list)
    """Gitignore-style globs never read, on top of `.gitignore` files (e.g. `tests/**`)."""
    max_file_bytes: int = 2_000_000
    """Files larger than this are skipped with reason `too_large`. Raise it for huge generated docs."""
    respect_gitignore: bool = True
    """Honour `.gitignore` files (the root's and nested ones) and always skip `.git/`."""
    skip_generated: bool = True
    """Also skip what is generated, never written: `__pycache__/`, `*.pyc`, `node_modules/`, virtualenvs,
    tool caches, `*.egg-info/` (the `GENERATED` list above). Off: they are walked like any file."""
    batch_bytes: int = 1_000_000
    """Bytes of files sent to one parallel chunking task. Smaller: better balance, more overhead."""
    chunk: ChunkConfig = field(default_factory=ChunkConfig)

    def problems(self) -> list[str]:
        out = []
        if self.max_file_bytes <= 0:
            out.append(f"ingest.max_file_bytes={self.max_file_bytes} must be positive (default 2000000)")
        if self.batch_bytes <= 0:
            out.append(f"ingest.batch_bytes={self.batch_bytes} must be positive (default 1000000)")
        for name in ("include", "exclude"):
            for glob in getattr(self, name):
                if not glob.strip():
                    out.append(f"ingest.{name} holds an empty glob; remove it")
        return out + self.chunk.problems()

    def validate(self) -> "IngestConfig":
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "chunk"}
        d["chunk"] = {f.name: getattr(self.chunk, f.name) for f in fields(self.chunk)}
        return d
