"""Evaluation settings: which prompts base and tuned answer, how they generate, and the optional pairwise judge."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.config_base import Config
from backend.endpoint_config import EndpointConfig

SET_MEANING = {
    "test": "whole files held out of training: do the skills carry over to documents the model never saw?",
    "val": "whole files held out of training (the validation split)",
    "probe": "questions about what the model was trained on, asked in words it never saw: does it know the "
             "repository?",
    "retention": "general coding prompts unrelated to the repository: did it keep what it knew?",
}
"""What each evaluation set asks, in a sentence (the CLI and the dashboard say it beside the numbers)."""
MAX_PROMPTS = 10_000_000
"""The most prompts a set may be limited to (`limit`, `limits`)."""
SIDES = {"base": "the base model alone (the adapter switched off)", "tuned": "the base model with the trained adapter"}


@dataclass
class EvalConfig(Config):
    """What `doctune eval` measures: base against tuned on the held-out split, on the knowledge probes of what the
    run trained on, and on the retention set; optionally a pairwise LLM judge of every pair, in both orders."""

    section = "eval"

    split: str = field(default="test", metadata={"flag": "--split"})
    """The held-out split whose prompts both models answer (files the run never saw)."""
    limit: int | None = field(default=None, metadata={"flag": "--limit", "min": 1, "max": MAX_PROMPTS})
    """Evaluate the first N prompts (by sample id) of each set: held-out split, knowledge probes, retention.
    None: every prompt."""
    limits: dict[str, int] = field(default_factory=dict)
    """Prompts per set, for the sets named (`test`, `probe`, `retention`); the others take `limit`."""
    max_new_tokens: int = field(default=128, metadata={"flag": "--max-new-tokens", "min": 1, "max": 100_000})
    """Tokens each model may generate per answer (greedy). More: longer answers, slower evaluation."""
    batch_size: int = field(default=8, metadata={"flag": "--batch-size", "min": 1, "max": 4096})
    """Prompts generated at once. Higher: faster on a GPU, more memory."""
    judge: bool = field(default=False, metadata={"flag": "--judge"})
    """Ask an LLM judge which answer of each (base, tuned) pair is better, in both orders so position bias
    cancels (needs the endpoint's key for a remote endpoint)."""
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    """The judge's endpoint, and its limits."""

    def own_problems(self) -> list[str]:
        out = []
        if not self.split.strip():
            out.append("eval.split is empty; name a held-out split of the dataset (`test`, `val`)")
        for name, n in self.limits.items():
            if not 1 <= n <= MAX_PROMPTS:
                out.append(f"eval.limits[{name!r}]={n!r} must be at least 1 and at most {MAX_PROMPTS} (prompts of "
                           f"that set)")
        return out

