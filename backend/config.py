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
    path = private_dir(Path(chosen).expanduser().resolve())
    for folder in PRIVATE_FOLDERS:
        private_dir(path / folder)
    return path


# what a home holds beside the database: logs, run folders (adapters, checkpoints), Ray's token and temp folder
PRIVATE_FOLDERS = ("logs", "runs", "ray")


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter (0700), created if need be.

    Raises:
        PermissionError: it belongs to another user, or is a symlink (it could lead anywhere).
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if path.is_symlink() or st.st_uid != os.getuid():
        raise PermissionError(f"{path} is a symlink or belongs to another user; DocTune keeps its data in folders "
                              "of its own: choose another --home (or remove it)")
    if st.st_mode & 0o077:
        path.chmod(0o700)
    return path
