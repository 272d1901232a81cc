"""Synthesis settings: the generator, the task mix and generation settings, which chunks are used, the budget;
the endpoint it sends to is an `endpoint:` section (`backend/endpoint_config.py`). The task list lives here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from backend.config import REPO_ROOT
from backend.config_base import Config
from backend.endpoint_config import PRICES_FILE, EndpointConfig

PROMPTS_DIR = REPO_ROOT / "data" / "prompts"
TASKS = ("qa", "codegen", "explain", "completion", "multiturn", "facts")
"""Task types a run draws from (`task_mix`): each becomes training samples."""
PROBE_TASK = "probe"
"""Knowledge probes: questions about a chunk asked to test the tuned model, never trained on (`probe_share`)."""
GENERATORS = ("heuristic", "openai")
LANGUAGES = ("en", "zh")
ENDPOINT_KEYS = frozenset(f.name for f in fields(EndpointConfig))


@dataclass
class SynthConfig(Config):
    """How samples are generated from a project's chunks (`doctune synth`; the judge at `doctune curate --judge`
    reads a `synth:` section too). Endpoint keys are also read at the top level (`base_url:` beside `generator:`),
    the form before `endpoint:` existed."""

    section = "synth"

    generator: str = field(default="heuristic", metadata={"flag": "--generator", "choices": GENERATORS})
    """`openai`: any OpenAI-compatible chat endpoint (DeepSeek, OpenAI, vLLM, Ollama). `heuristic`: offline,
    no key, samples derived from the documents' own structure (headings, docstrings, examples)."""
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    """The endpoint the `openai` generator sends to, and its limits."""
    task_mix: dict[str, float] = field(default_factory=lambda: {
        "qa": 0.3, "codegen": 0.2, "explain": 0.1, "completion": 0.1, "multiturn": 0.1, "facts": 0.2})
    """Relative weight of each task type; tasks that do not fit a chunk (code tasks on prose without
    code) are not drawn for it."""
    tasks_per_chunk: int = field(default=2, metadata={"min": 1, "max": len(TASKS)})
    """Different task types asked of each chunk. More: more samples and cost per chunk."""
    samples_per_request: int = field(default=3, metadata={"min": 1, "max": 100})
    """Samples asked for in one request (the COUNT in the prompt)."""
    probe_share: float = field(default=0.25, metadata={"min": 0, "max": 1})
    """Share of chunks (seeded draw) that also get one request for knowledge probes: questions about a fact the
    chunk states, asked differently from its training samples. Probes of files that land in the train split
    become the dataset's `probe` split, which evaluation uses to ask whether the tuned model learned the
    repository; they are never trained on. 0 turns probes off; the heuristic generator makes them for free."""
    language: str = field(default="en", metadata={"flag": "--language", "choices": LANGUAGES})
    """Language of instructions and answers: `en` or `zh` (code stays code)."""
    temperature: float = field(default=0.7, metadata={"min": 0, "max": 2})
    """Sampling temperature of every request (part of the cache key)."""
    max_output_tokens: int = field(default=2048, metadata={"min": 1, "max": 1_000_000})
    """Tokens one answer may have (part of the cache key); a budget reserves this much per request."""
    max_cost_usd: float | None = field(default=None, metadata={"flag": "--max-cost", "above": 0, "max": 1_000_000})
    """Stop cleanly before the run's cost would pass this (needs a price for the model)."""
    min_chunk_tokens: int = field(default=24, metadata={"min": 0, "max": 100_000})
    """Chunks smaller than this are not worth a request."""
    max_chunks: int | None = field(default=None, metadata={"flag": "--max-chunks", "min": 1, "max": 10**8})
    """Use only the first N chunks (by file and position): for trials."""
    target_samples: int | None = field(default=None, metadata={"flag": "--target-samples", "min": 1, "max": 10**9})
    """Stop sending once this many samples have passed validation (or the budget is spent): units are taken
    round-robin across files in a seeded order, so the repository is covered evenly; the units left are recorded
    as not needed, not as failures. None: every unit."""
    seed: int = field(default=7, metadata={"min": 0, "max": 2**32 - 1})
    """Seed of the task draw and of the chunks chosen for probes."""
    prompts_dir: str = str(PROMPTS_DIR)
    """Folder of the editable prompt templates (`<task>.md`, `judge.md`)."""

    @classmethod
    def from_dict(cls, data: dict, source: str = "config", base: SynthConfig | None = None) -> SynthConfig:
        """As `Config.from_dict`; endpoint keys at the top level (files and stored runs from before `endpoint:`)
        are read into the endpoint section."""
        if isinstance(data, dict) and ENDPOINT_KEYS & set(data) and isinstance(data.get("endpoint", {}), dict):
            flat = {k: v for k, v in data.items() if k in ENDPOINT_KEYS}
            data = {k: v for k, v in data.items() if k not in ENDPOINT_KEYS} | {
                "endpoint": flat | data.get("endpoint", {})}
        return super().from_dict(data, source, base)

    def own_problems(self) -> list[str]:
        out = []
        if self.generator not in GENERATORS:
            out.append(f"synth.generator={self.generator!r}: use 'openai' or 'heuristic'")
        unknown = set(self.task_mix) - set(TASKS)
        if unknown:
            out.append(f"synth.task_mix has unknown tasks {sorted(unknown)}; known: {', '.join(TASKS)}")
        if not any(w > 0 for w in self.task_mix.values()) or any(w < 0 for w in self.task_mix.values()):
            out.append("synth.task_mix needs non-negative weights and at least one above 0")
        if self.language not in LANGUAGES:
            out.append(f"synth.language={self.language!r}: use 'en' or 'zh'")
        if self.max_cost_usd is not None and self.price() is None:
            out.append(f"synth.max_cost_usd is set but there is no price for model {self.endpoint.model!r}; add it "
                       f"to {PRICES_FILE.name} or to synth.endpoint.prices")
        needed = [t for t, w in self.task_mix.items() if w > 0] + ([PROBE_TASK] if self.probe_share > 0 else [])
        missing = [t for t in needed if not (Path(self.prompts_dir) / f"{t}.md").exists()]
        if missing:
            out.append(f"no prompt template for {missing} in {self.prompts_dir}; add <task>.md files")
        return out

    def price(self) -> dict[str, float] | None:
        """USD per million input/output tokens for this run's model, or None when unknown."""
        if self.generator == "heuristic":
            return {"input": 0.0, "output": 0.0}
        return self.endpoint.price()

    @classmethod
    def from_run(cls, run: dict) -> "SynthConfig":
        """The config a synthesis run (a `runs` row) was stored with; its `fingerprint` is derived, so left out.

        Raises:
            ConfigError: the stored config is not valid here (a run stored by an older version).
        """
        return cls.from_dict({k: v for k, v in run["config"].items() if k != "fingerprint"}, f"run {run['run_id']}")

    def model_name(self) -> str:
        return "heuristic" if self.generator == "heuristic" else self.endpoint.model

    def fingerprint(self) -> str:
        """What decides the dataset: a run is resumed only under the same fingerprint. The endpoint's base URL and
        model count; its limits (rpm, concurrency, retries, ...) do not. The payload is the flat one of before
        `endpoint:` existed, so a run stored then still resumes."""
        keys = ("generator", "task_mix", "tasks_per_chunk", "samples_per_request", "probe_share", "language",
                "temperature", "max_output_tokens", "min_chunk_tokens", "max_chunks", "seed", "prompts_dir")
        payload = {k: getattr(self, k) for k in keys} | {"base_url": self.endpoint.base_url,
                                                         "model": self.endpoint.model}
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
