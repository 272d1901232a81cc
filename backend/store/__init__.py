"""The DuckDB store: versioned schema, migrations, and the verbs every stage reads and writes through.

DuckDB lets one process hold a file read-write and refuses every other process, even read-only.
So exactly one `Store` object owns `doctune.duckdb`; in a running system it lives inside the named
Ray store actor (`actors/store_actor.py`) and everyone else calls that actor. A second owner fails
at once with `StoreLockedError`, whose message names the holder (from the holder file written on open).

Writes arrive as Arrow tables and land in one transaction per batch: a crash loses at most the
batch in flight, never part of one.

The verbs live in one module per domain, each a mixin over `core.StoreCore` (the connection and
its helpers); `Store` composes them, so one object still owns the one connection:

    schema.py      migrations, in order          lock.py        the holder lock, StoreLockedError
    core.py        connection, query helpers     corpus.py      projects, files, chunks, identifiers
    runs.py        runs, metrics, events         synthesis.py   responses, requests, samples, dead letters
    datasets.py    judge scores, dataset versions, review, profiles
    evaluation.py  evaluation results and views
"""

from __future__ import annotations

from backend.store.corpus import CorpusStore
from backend.store.datasets import DatasetStore
from backend.store.evaluation import EvaluationStore
from backend.store.lock import StoreLockedError, describe_holder, holder_path, ray_address_of_holder
from backend.store.runs import RunStore
from backend.store.schema import MIGRATIONS, SCHEMA_VERSION
from backend.store.synthesis import SynthesisStore

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Store", "StoreLockedError", "describe_holder", "holder_path",
           "ray_address_of_holder"]


class Store(CorpusStore, SynthesisStore, DatasetStore, RunStore, EvaluationStore):
    """The one owner of a DuckDB file. Not thread-safe: its actor serializes calls."""
