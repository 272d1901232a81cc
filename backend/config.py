"""Where DocTune keeps its data: the repository's own folders and the home folder of a run's database.

The settings of each stage are in `backend/<stage>_config.py` (on the base in `backend/config_base.py`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO_ROOT / "data" / "runtime"
SAMPLE_REPO = REPO_ROOT / "data" / "sample_repo"
DB_FILENAME = "doctune.duckdb"
PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""What a project may be called (the whole name): it names exports, dataset entries and folders, so no slash, no
space, no newline."""


def check_project_name(name: str) -> str:
    """`name`, when it is a valid project name.

    Raises:
        ValueError: it does not match `PROJECT_NAME`; the message gives the pattern.
    """
    if not isinstance(name, str) or not PROJECT_NAME.fullmatch(name):
        raise ValueError(f"invalid project name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', starting "
                         f"with a letter or digit (^{PROJECT_NAME.pattern}$)")
    return name


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """The DocTune home folder: `--home`, else `DOCTUNE_HOME`, else `data/runtime` in the checkout."""
    chosen = home or os.environ.get("DOCTUNE_HOME") or DEFAULT_HOME
    path = Path(chosen).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
