"""Where DocTune keeps its data: the repository's own folders and the home folder of a run's database.

The settings of each stage are in `backend/<stage>_config.py` (on the base in `backend/config_base.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO_ROOT / "data" / "runtime"
SAMPLE_REPO = REPO_ROOT / "data" / "sample_repo"
DB_FILENAME = "doctune.duckdb"


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """The DocTune home folder: `--home`, else `DOCTUNE_HOME`, else `data/runtime` in the checkout."""
    chosen = home or os.environ.get("DOCTUNE_HOME") or DEFAULT_HOME
    path = Path(chosen).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
