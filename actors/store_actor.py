"""The store actor: the one process that owns `doctune.duckdb`, and the client everyone calls it through.

The actor is named after its home folder and detached, so every driver in the cluster (CLI,
dashboard, run actors) finds the same one, and it outlives the command that created it. It is
pinned to the node where it was created, because the database file lives on that node's disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import ray

from backend.config import DB_FILENAME
from backend.store import Store, StoreLockedError


class StoreActor:
    """Holds the Store; a lock failure is kept and re-raised by `ready()` so callers see its message."""

    def __init__(self, db_path: str, ray_address: str | None, name: str):
        self._error: StoreLockedError | None = None
        try:
            self._store = Store(db_path, role=f"DocTune store actor '{name}'", ray_address=ray_address)
        except StoreLockedError as exc:
            self._error = exc

    def ready(self) -> int:
        if self._error is not None:
            raise self._error
        return self._store.schema_version()

    def call(self, verb: str, *args: Any, **kwargs: Any) -> Any:
        if verb.startswith("_"):
            raise AttributeError(f"Store.{verb} is private")
        return getattr(self._store, verb)(*args, **kwargs)

    def shutdown(self) -> None:
        self._store.close()


def actor_name(home: Path) -> str:
    return "store-" + hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:10]


class StoreClient:
    """Calls the store actor for `home`, creating it when this cluster has none yet.

    Every public `Store` verb is available as a method: `client.stats("proj")`.

    Raises:
        StoreLockedError: another process (outside this cluster) owns the database file.
    """

    def __init__(self, home: Path):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.home = home
        self.actor_name = name = actor_name(home)
        here = ray.get_runtime_context().get_node_id()
        self.actor = ray.remote(StoreActor).options(
            name=name, get_if_exists=True, lifetime="detached", num_cpus=0, max_concurrency=1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
        ).remote(str(home / DB_FILENAME), ray.get_runtime_context().gcs_address, name)
        try:
            ray.get(self.actor.ready.remote())
        except StoreLockedError:
            ray.kill(self.actor)  # a named actor without a database must not be found by the next caller
            raise

    def __getattr__(self, verb: str):
        if verb.startswith("_"):
            raise AttributeError(verb)

        def method(*args, **kwargs):
            return ray.get(self.actor.call.remote(verb, *args, **kwargs))

        return method

    def submit(self, verb: str, *args, **kwargs) -> ray.ObjectRef:
        """Call without waiting (arguments may be ObjectRefs, resolved inside the actor)."""
        return self.actor.call.remote(verb, *args, **kwargs)

    def shutdown(self) -> None:
        """Close the database and end the actor (the next client opens it again)."""
        ray.get(self.actor.shutdown.remote())
        ray.kill(self.actor)
