"""The one status vocabulary of every run kind (ingest, synth, curate, train, eval, merge), and its run ids."""

from __future__ import annotations

import time
import uuid
from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is; the store keeps the value (a plain string), so `RunStatus.COMPLETED == "completed"`."""

    QUEUED = "queued"
    """Created; its actor waits for resources (a GPU another run holds)."""
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    """It raised; the error is on the run. Training resumes from its last checkpoint."""
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    """Its process died (a killed actor, a stopped cluster): rerunning the same command resumes what can be."""
    BUDGET_STOPPED = "budget_stopped"
    """Synthesis stopped before its cost would pass `max_cost_usd`."""


ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})
"""A run in one of these has an actor working on it, unless its process died (then it is interrupted)."""

KINDS = ("ingest", "synth", "curate", "train", "eval", "merge")


def new_run_id(kind: str) -> str:
    """`<kind>-<UTC time>-<6 hex>`: sorts by time, and two runs started in the same second still differ."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
