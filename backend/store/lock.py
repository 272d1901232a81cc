"""The holder lock: one process owns `doctune.duckdb`, and a second one is told who.

DuckDB lets one process hold a file read-write and refuses every other process, even read-only, with
a bare lock error. So the owner writes a holder file beside the database on open (pid, host, role,
Ray cluster) and removes it on close; a refused opener reads it and raises `StoreLockedError` naming
the holder. A holder that was killed and is still being reaped is waited for, not reported.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb


class StoreLockedError(RuntimeError):
    """Another process owns the database file."""


def acquire(db_path: Path, *, role: str, ray_address: str | None) -> duckdb.DuckDBPyConnection:
    """Open `db_path` read-write and write its holder file.

    Raises:
        StoreLockedError: another live process owns the file; the message names it.
    """
    try:
        con = _connect_waiting_for_the_dead(db_path)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        address = ray_address_of_holder(db_path)
        hint = f" Or join its cluster: --ray-address {address}." if address else ""
        raise StoreLockedError(
            f"{db_path} is held by {describe_holder(db_path)}. DuckDB allows one owner per file: "
            f"stop that process, or use another --home.{hint} (DuckDB said: {exc})"
        ) from None
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "role": role, "ray_address": ray_address,
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    # the database and its holder file are the user's alone (the home folder is 0700 as well)
    db_path.chmod(0o600)
    fd = os.open(holder_path(db_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a holder file an older version left behind may be 0644
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(holder))
    return con


def release(con: duckdb.DuckDBPyConnection, db_path: Path) -> None:
    """Close the connection and remove the holder file, even when closing fails."""
    try:
        con.close()
    finally:
        holder_path(db_path).unlink(missing_ok=True)


def holder_path(db_path: Path) -> Path:
    """The holder file beside `db_path`."""
    return db_path.with_name(db_path.name + ".holder.json")


def describe_holder(db_path: Path) -> str:
    """Who holds `db_path`, from the holder file its owner wrote on open ('unknown' if none)."""
    try:
        h = json.loads(holder_path(db_path).read_text())
    except (OSError, ValueError):
        return "an unknown process (no holder file)"
    where = f"pid {h.get('pid')} on {h.get('host')}"
    if h.get("role"):
        where += f", {h['role']}"
    if h.get("ray_address"):
        where += f", Ray cluster {h['ray_address']}"
    return where + f", since {h.get('since')}"


def ray_address_of_holder(db_path: Path) -> str | None:
    """The Ray cluster the holder runs in, if it wrote one."""
    try:
        return json.loads(holder_path(db_path).read_text()).get("ray_address")
    except (OSError, ValueError):
        return None


def _holder_is_dying(db_path: Path) -> bool:
    """True when the holder file's process is gone or a zombie: its lock is about to be released."""
    try:
        pid = int(json.loads(holder_path(db_path).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return not _pid_exists(pid)
    return state in {"Z", "X"}


def _pid_exists(pid: int) -> bool:
    """True when `pid` is a process, ours to signal or not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _connect_waiting_for_the_dead(db_path: Path, grace_s: float = 20.0) -> duckdb.DuckDBPyConnection:
    """Open the file; when its holder is a process that was killed and is still being reaped (a crashed
    run's store actor), wait for the lock to go instead of failing. A live holder fails at once."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            return duckdb.connect(str(db_path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or not _holder_is_dying(db_path) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
