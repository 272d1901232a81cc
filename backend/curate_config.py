"""Curation settings: what a sample must satisfy to be kept, how duplicates are found, how the rest is split."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from backend.config_base import Config
from backend.sandbox import sandbox_problem

PROBE_SPLIT = "probe"
"""The split of knowledge probes: questions about the train split's files, never trained on."""

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class CurateConfig(Config):
    """What a sample must satisfy to be kept, how duplicates are found and how the rest is split (`doctune curate`;
    a `curate:` section of its `--config` file, whose `synth:` section names the judge's endpoint)."""

    section = "curate"

    min_instruction_chars: int = field(default=10, metadata={"min": 0, "max": 1_000_000})
    """Instructions shorter than this (stripped) are dropped as `instruction_too_short`."""
    min_output_chars: int = field(default=20, metadata={"min": 0, "max": 1_000_000})
    """Outputs shorter than this (stripped) are dropped as `output_too_short`."""
    max_output_chars: int = field(default=8000, metadata={"min": 1, "max": 10_000_000})
    """Outputs longer than this are dropped as `output_too_long` (usually a runaway generation)."""
    require_python_parses: bool = True
    """Drop a sample whose answer holds a Python block that `ast.parse` rejects (`python_syntax_error`)."""
    judge_threshold: float | None = field(default=None, metadata={"flag": "--judge-threshold", "min": 1, "max": 10})
    """Drop samples whose LLM-judge score (1-10) is below this. None: scores are recorded, never used
    to drop. A sample without a score is kept."""
    near_dup_threshold: float = field(default=0.85, metadata={"flag": "--near-dup-threshold", "above": 0, "max": 1})
    """Jaccard similarity of word 5-shingles at or above which two samples are near-duplicates.
    Lower: more aggressive dedup (0.7 also catches paraphrases of one template)."""
    num_perm: int = field(default=64, metadata={"min": 8, "max": 1024})
    """MinHash permutations. More: fewer missed near-duplicates, slower. Candidates are always
    confirmed by exact Jaccard, so this never causes a false drop."""
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    """Split name → fraction of samples (they must sum to 1). Whole source files are assigned, so the
    sample fractions are approximate."""
    seed: int = field(default=13, metadata={"min": 0, "max": 2**32 - 1})
    """Seed of the MinHash permutations and of the file order that decides splits."""
    exec_check: bool = field(default=False, metadata={"flag": "--exec-check"})
    """Run each sample's Python blocks in the sandbox (`exec_check`, bubblewrap: `apt-get install bubblewrap`) and
    drop those that fail, time out, run out of memory or crash their check. Off by default: it costs a sandbox per
    sample."""
    exec_timeout_s: float = field(default=10, metadata={"above": 0, "max": 3600})
    """Wall-clock limit of one sample's execution check."""

    def own_problems(self) -> list[str]:
        out = []
        # below 1 is already a bound problem of its own; this one is about the pair
        if 1 <= self.max_output_chars <= max(self.min_output_chars, 0):
            out.append(f"curate.max_output_chars={self.max_output_chars} must be above min_output_chars "
                       f"({self.min_output_chars}); 8000 is typical")
        if not self.splits:
            out.append('curate.splits is empty; use e.g. {"train": 0.8, "val": 0.1, "test": 0.1}')
        if PROBE_SPLIT in self.splits:
            out.append(f"curate.splits names '{PROBE_SPLIT}', which is reserved for knowledge probes; rename it")
        for name, frac in self.splits.items():
            if not _SPLIT_NAME.match(str(name)):
                out.append(f"curate.splits name {name!r} must be letters, digits, '_' or '-' (it names a file)")
            if not 0 <= frac <= 1:
                out.append(f"curate.splits[{name!r}]={frac} must be a fraction between 0 and 1")
        if self.splits and not math.isclose(sum(self.splits.values()), 1.0, abs_tol=1e-6):
            out.append(f"curate.splits fractions sum to {sum(self.splits.values()):g}; they must sum to 1")
        if self.exec_check and sandbox_problem():
            out.append(f"curate.exec_check is on, but {sandbox_problem()}")
        return out
