"""Export settings: the format a dataset version is written in, where, with which system prompt and splits."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.config_base import Config

FORMATS = ("alpaca", "sharegpt", "openai", "parquet")


@dataclass
class ExportConfig(Config):
    """How `doctune export` writes a dataset version: one file per split in the chosen format, provenance
    sidecars, LLaMA-Factory's `dataset_info.json` and a manifest."""

    section = "export"

    format: str = field(default="alpaca", metadata={"flag": "--format", "choices": FORMATS})
    """`alpaca` (instruction, input, output), `sharegpt` (conversations), `openai` (messages) or `parquet` (the
    alpaca columns plus provenance)."""
    out: str | None = field(default=None, metadata={"flag": "--out"})
    """The folder to write (LLaMA-Factory's `dataset_dir`): a new or empty one, unless `force` is on."""
    system_prompt: str | None = field(default=None, metadata={"flag": "--system-prompt"})
    """A system prompt for every row that has none of its own; None: rows without one have none."""
    splits: list[str] | None = None
    """Only these splits (e.g. `train`, `val`); None: every split the version has, `probe` included."""
    force: bool = field(default=False, metadata={"flag": "--force"})
    """Write into a folder that already holds files: DocTune's own files there (the names it writes: split files,
    provenance, `dataset_info.json`, `manifest.json`) are replaced, every other file is left alone. Off: a folder
    that is not empty is refused."""

    def own_problems(self) -> list[str]:
        out = []
        if self.format not in FORMATS:
            out.append(f"export.format={self.format!r}: use one of {', '.join(FORMATS)}")
        if not (self.out or "").strip():
            out.append("export.out is not set; name the folder to write (--out)")
        if self.splits is not None and not self.splits:
            out.append("export.splits is empty; name splits (e.g. [train, val]) or null for all")
        return out

    def chosen(self, samples: list[dict]) -> list[dict]:
        """The samples of the splits to export."""
        return samples if self.splits is None else [s for s in samples if s.get("split") in self.splits]
