"""The OpenAI-compatible endpoint and its limits, shared by synthesis, the judge at curation and the pairwise
judge at evaluation; the key lookup and `Secret`, which carries the key to the actors without showing it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import yaml

from backend.config import REPO_ROOT
from backend.config_base import Config

PRICES_FILE = REPO_ROOT / "data" / "prices.yaml"
# Environment variables that may hold the endpoint's key, in the order they are tried.
KEY_VARIABLES = ("DOCTUNE_API_KEY", "DEEPSEEK_API_KEY", "OPENAI_API_KEY")

FAILURE_CLASSES = {
    "http_5xx": ("5xx", "the server failed (HTTP 500–599); retried with backoff"),
    "http_429": ("429", "rate limited (HTTP 429); waited out, not counted against the attempts"),
    "timeout": ("timeouts", "no answer within the request timeout; retried"),
    "connection": ("connection", "the endpoint could not be reached; retried"),
    "parse_error": ("unparseable", "an answer arrived (and was paid for) but held no usable samples; asked again"),
    "http_4xx": ("4xx", "the endpoint refused the request itself (HTTP 4xx); not repeated"),
    "json_mode_refused": ("no JSON mode", "the endpoint has no JSON mode; asked again in words"),
    "error": ("other", "an error of no known class; retried"),
    "no_samples": ("no samples", "the offline heuristic found nothing to derive from the chunk; retrying with it "
                                 "fails again, an LLM generator covers it"),
}
"""A failed attempt's class (its status in the request log, `backend.llm_request.classify`) or a dead letter's
reason: (short label, what it means and what was done about it)."""


@dataclass
class EndpointConfig(Config):
    """An OpenAI-compatible chat endpoint (DeepSeek, OpenAI, vLLM, Ollama) and your plan's limits on it. The key is
    never a setting: it is read from `DOCTUNE_API_KEY`, else `DEEPSEEK_API_KEY`, else `OPENAI_API_KEY`."""

    section = "endpoint"

    base_url: str = field(default="https://api.deepseek.com/v1", metadata={"flag": "--base-url"})
    """The endpoint's base URL (vLLM: http://127.0.0.1:8000/v1, Ollama: http://127.0.0.1:11434/v1)."""
    model: str = field(default="deepseek-chat", metadata={"flag": "--model"})
    """Model name as the endpoint knows it; `deepseek-chat` is DeepSeek V3."""
    json_mode: bool = True
    """Ask for `response_format={"type": "json_object"}`; turned off for the run if the endpoint refuses it."""
    concurrency: int = field(default=16, metadata={"flag": "--concurrency", "min": 1, "max": 10_000})
    """Requests in flight at most (adaptive: cut to 0.7 on a 429, once per round trip at most; regrown on success)."""
    workers: int = field(default=2, metadata={"min": 1, "max": 1000})
    """Async generator actors sharing the one rate limiter."""
    rpm: int = field(default=600, metadata={"flag": "--rpm", "min": 1, "max": 10_000_000})
    """Requests per minute allowed by your plan."""
    tpm: int = field(default=1_000_000, metadata={"flag": "--tpm", "min": 1, "max": 10**10})
    """Tokens per minute (prompt + completion) allowed by your plan."""
    rate_window_s: float = field(default=60.0, metadata={"above": 0, "max": 86_400})
    """The provider's accounting window for rpm/tpm; the limiter admits rpm × window / 60 per window."""
    request_timeout_s: float = field(default=120.0, metadata={"above": 0, "max": 3600})
    """Seconds to wait for one answer before the attempt counts as a timeout (streamed: for each read)."""
    stream: bool = True
    """Stream answers, so a hung request is noticed by its silence (below); turned off for the run if the endpoint
    refuses `stream`."""
    first_token_timeout_s: float = field(default=60.0, metadata={"above": 0, "max": 3600})
    """Streamed: seconds to wait for the first chunk before the attempt is closed and retried (a stall); once
    answers have come, 10 × their average wait for a first token (at least 5 s) where that is shorter."""
    stall_timeout_s: float = field(default=30.0, metadata={"above": 0, "max": 3600})
    """Streamed: seconds of silence between two chunks before the attempt is closed and retried (a stall)."""
    max_attempts: int = field(default=5, metadata={"min": 1, "max": 100})
    """Tries per request before its chunk goes to the dead letters (429s are waited out and not counted)."""
    backoff_base_s: float = field(default=1.0, metadata={"min": 0, "max": 3600})
    """First wait after a failed attempt; it doubles with every further failure (with full jitter)."""
    backoff_max_s: float = field(default=60.0, metadata={"min": 0, "max": 86_400})
    """The longest wait between two attempts."""
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    """USD per million tokens per model, on top of data/prices.yaml: {"my-model": {"input": 0.1, "output": 0.2}}."""

    def price(self) -> dict[str, float] | None:
        """USD per million input/output tokens for this model, or None when unknown."""
        table = yaml.safe_load(PRICES_FILE.read_text()) | self.prices
        return table.get(self.model)


# The file descriptor of a pipe holding the key, for a process that must not carry it in its environment
KEY_PIPE_VARIABLE = "DOCTUNE_API_KEY_FD"


def api_key() -> str | None:
    """The endpoint's key from the environment (never stored anywhere by DocTune)."""
    for name in KEY_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


def hand_over_key(env: dict[str, str]) -> dict[str, str]:
    """`env` for a process this one execs (the dashboard) without the key variables; the key, if any, waits in an
    inherited pipe named by `KEY_PIPE_VARIABLE` for `take_handed_key`. The environment a process starts with is
    readable in /proc/<pid>/environ for its whole life; a pipe is read once and is empty after."""
    env = {k: v for k, v in env.items() if k not in KEY_VARIABLES}
    key = api_key()
    if key:
        read, write = os.pipe()  # holds 64 KiB before a write blocks: far more than a key
        os.write(write, key.encode())
        os.close(write)
        os.set_inheritable(read, True)
        env[KEY_PIPE_VARIABLE] = str(read)
    return env


def take_handed_key() -> None:
    """Read the key `hand_over_key` left in the pipe into this process's variables (set after the start, they are
    not in /proc/<pid>/environ), once."""
    fd = os.environ.pop(KEY_PIPE_VARIABLE, None)
    if fd is None:
        return
    with os.fdopen(int(fd)) as pipe:
        key = pipe.read()
    if key:
        os.environ[KEY_VARIABLES[0]] = key


class Secret:
    """An API key on its way to the generator actors: it never prints, and is never stored."""

    def __init__(self, value: str | None):
        self._value = value

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret(None)"

    __str__ = __repr__
