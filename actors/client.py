"""The client API: what the CLI and the dashboard call. No SQL and no model code behind this line."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from backend.config import IngestConfig, resolve_home
from actors.runtime import init_ray


class DocTune:
    """A connection to one DocTune home: joins or starts Ray, then finds or creates its store actor.

    Args:
        home: the home folder (default: `DOCTUNE_HOME`, else `data/runtime`).
        ray_address: a cluster to join (default: `RAY_ADDRESS`, else a local cluster).
    """

    def __init__(self, home: str | Path | None = None, ray_address: str | None = None,
                 num_cpus: int | None = None):
        from actors.store_actor import StoreClient

        self.home = resolve_home(home)
        self.ray_address = init_ray(ray_address, num_cpus=num_cpus)
        self.store = StoreClient(self.home)

    def ingest(self, path: str | Path, project: str, cfg: IngestConfig | None = None,
               on_progress: Callable[[int, int], None] | None = None,
               on_plan: Callable[[int], None] | None = None):
        from actors.ingest_run import ingest_repository

        return ingest_repository(self.store, Path(path), project, cfg or IngestConfig(),
                                 on_progress=on_progress, on_plan=on_plan)

    def stats(self, project: str) -> dict:
        """Raises KeyError when the project does not exist."""
        return self.store.stats(project)

    def projects(self) -> list[dict]:
        return self.store.projects()

    def runs(self, project: str | None = None, limit: int = 100) -> list[dict]:
        return self.store.runs(project, limit)
