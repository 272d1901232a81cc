"""Synthesis settings: generator endpoint, task mix, rate limits, retries, budget, prices."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from backend.config import REPO_ROOT, ConfigError

PROMPTS_DIR = REPO_ROOT / "data" / "prompts"
PRICES_FILE = REPO_ROOT / "data" / "prices.yaml"
TASKS = ("qa", "codegen", "explain", "completion", "multiturn", "facts")
"""Task types a run draws from (`task_mix`): each becomes training samples."""
PROBE_TASK = "probe"
"""Knowledge probes: questions about a chunk asked to test the tuned model, never trained on (`probe_share`)."""
# Environment variables that may hold the generator's key, in the order they are tried.
KEY_VARIABLES = ("DOCTUNE_API_KEY", "DEEPSEEK_API_KEY", "OPENAI_API_KEY")


@dataclass
class SynthConfig:
    """How samples are generated from a project's chunks."""

    generator: str = "heuristic"
    """`openai`: any OpenAI-compatible chat endpoint (DeepSeek, OpenAI, vLLM, Ollama). `heuristic`: offline,
    no key, samples derived from the documents' own structure (headings, docstrings, examples)."""
    base_url: str = "https://api.deepseek.com/v1"
    """The endpoint's base URL (vLLM: http://127.0.0.1:8000/v1, Ollama: http://127.0.0.1:11434/v1)."""
    model: str = "deepseek-chat"
    """Model name as the endpoint knows it; `deepseek-chat` is DeepSeek V3."""
    task_mix: dict[str, float] = field(default_factory=lambda: {
        "qa": 0.3, "codegen": 0.2, "explain": 0.1, "completion": 0.1, "multiturn": 0.1, "facts": 0.2})
    """Relative weight of each task type; tasks that do not fit a chunk (code tasks on prose without
    code) are not drawn for it."""
    tasks_per_chunk: int = 2
    """Different task types asked of each chunk. More: more samples and cost per chunk."""
    samples_per_request: int = 3
    """Samples asked for in one request (the COUNT in the prompt)."""
    probe_share: float = 0.25
    """Share of chunks (seeded draw) that also get one request for knowledge probes: questions about a fact the
    chunk states, asked differently from its training samples. Probes of files that land in the train split
    become the dataset's `probe` split, which evaluation uses to ask whether the tuned model learned the
    repository; they are never trained on. 0 turns probes off; the heuristic generator makes them for free."""
    language: str = "en"
    """Language of instructions and answers: `en` or `zh` (code stays code)."""
    temperature: float = 0.7
    max_output_tokens: int = 2048
    json_mode: bool = True
    """Ask for `response_format={"type": "json_object"}`; turned off for the run if the endpoint refuses it."""
    concurrency: int = 16
    """Requests in flight at most (adaptive: halves on 429, grows back on success)."""
    workers: int = 2
    """Async generator actors sharing the one rate limiter."""
    rpm: int = 600
    """Requests per minute allowed by your plan."""
    tpm: int = 1_000_000
    """Tokens per minute (prompt + completion) allowed by your plan."""
    rate_window_s: float = 60.0
    """The provider's accounting window for rpm/tpm; the limiter admits rpm × window / 60 per window."""
    request_timeout_s: float = 120.0
    max_attempts: int = 5
    """Tries per request before its chunk goes to the dead letters (429s are waited out and not counted)."""
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_cost_usd: float | None = None
    """Stop cleanly before the run's cost would pass this (needs a price for the model)."""
    min_chunk_tokens: int = 24
    """Chunks smaller than this are not worth a request."""
    max_chunks: int | None = None
    """Use only the first N chunks (by file and position): for trials."""
    seed: int = 7
    prompts_dir: str = str(PROMPTS_DIR)
    """Folder of the editable prompt templates (`<task>.md`, `judge.md`)."""
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    """USD per million tokens per model, on top of data/prices.yaml: {"my-model": {"input": 0.1, "output": 0.2}}."""

    def problems(self) -> list[str]:
        out = []
        if self.generator not in {"openai", "heuristic"}:
            out.append(f"synth.generator={self.generator!r}: use 'openai' or 'heuristic'")
        unknown = set(self.task_mix) - set(TASKS)
        if unknown:
            out.append(f"synth.task_mix has unknown tasks {sorted(unknown)}; known: {', '.join(TASKS)}")
        if not any(w > 0 for w in self.task_mix.values()) or any(w < 0 for w in self.task_mix.values()):
            out.append("synth.task_mix needs non-negative weights and at least one above 0")
        if self.language not in {"en", "zh"}:
            out.append(f"synth.language={self.language!r}: use 'en' or 'zh'")
        for name in ("tasks_per_chunk", "samples_per_request", "concurrency", "workers", "rpm", "tpm", "max_attempts"):
            if getattr(self, name) < 1:
                out.append(f"synth.{name}={getattr(self, name)} must be at least 1")
        if not 0 <= self.probe_share <= 1:
            out.append(f"synth.probe_share={self.probe_share} must be between 0 and 1 (0.25 is typical, 0 turns "
                       f"knowledge probes off)")
        if self.rate_window_s <= 0:
            out.append("synth.rate_window_s must be positive (60 for per-minute limits)")
        if self.request_timeout_s <= 0:
            out.append("synth.request_timeout_s must be positive")
        if self.max_cost_usd is not None and self.max_cost_usd <= 0:
            out.append("synth.max_cost_usd must be positive (or unset for no cap)")
        if self.max_cost_usd is not None and self.price() is None:
            out.append(f"synth.max_cost_usd is set but there is no price for model {self.model!r}; add it to "
                       f"{PRICES_FILE.name} or to synth.prices")
        needed = [t for t, w in self.task_mix.items() if w > 0] + ([PROBE_TASK] if self.probe_share > 0 else [])
        missing = [t for t in needed if not (Path(self.prompts_dir) / f"{t}.md").exists()]
        if missing:
            out.append(f"no prompt template for {missing} in {self.prompts_dir}; add <task>.md files")
        return out

    def validate(self) -> "SynthConfig":
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self

    def price(self) -> dict[str, float] | None:
        """USD per million input/output tokens for this model, or None when unknown."""
        if self.generator == "heuristic":
            return {"input": 0.0, "output": 0.0}
        table = yaml.safe_load(PRICES_FILE.read_text()) | self.prices
        return table.get(self.model)

    def model_name(self) -> str:
        return "heuristic" if self.generator == "heuristic" else self.model

    def fingerprint(self) -> str:
        """What decides the dataset: a run is resumed only under the same fingerprint."""
        keys = ("generator", "base_url", "model", "task_mix", "tasks_per_chunk", "samples_per_request", "probe_share",
                "language",
                "temperature", "max_output_tokens", "min_chunk_tokens", "max_chunks", "seed", "prompts_dir")
        payload = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | Path) -> "SynthConfig":
        """Load a YAML file whose keys are this class's fields (a `synth:` section is also accepted)."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        data = data.get("synth", data)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError([f"{path}: unknown setting(s) {sorted(unknown)}; see SynthConfig in "
                               f"backend/synth_config.py"])
        return cls(**data)


def api_key() -> str | None:
    """The generator's key from the environment (never stored anywhere by DocTune)."""
    for name in KEY_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


class Secret:
    """An API key on its way to the generator actors: it never prints, and is never stored."""

    def __init__(self, value: str | None):
        self._value = value

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret(None)"

    __str__ = __repr__
