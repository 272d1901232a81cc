"""The core every domain store builds on: the one connection, the schema's upkeep, and the query helpers.

`StoreCore` opens the database through the holder lock (`lock.py`), brings the file up to the latest
migration (`schema.py`), and gives the domain stores their shared helpers: transactions, Arrow inserts,
Arrow reads and dict reads. It holds no domain verbs, so each domain module reads on its own.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from backend.store.lock import acquire, release
from backend.store.schema import MIGRATIONS, SCHEMA_VERSION


def utc_now() -> datetime:
    """The current time, timezone-aware (every TIMESTAMPTZ the store writes)."""
    return datetime.now(timezone.utc)


class StoreCore:
    """The owner of one DuckDB connection, and the helpers the domain stores query it with."""

    def __init__(self, db_path: str | os.PathLike, *, role: str = "", ray_address: str | None = None):
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = acquire(self.path, role=role, ray_address=ray_address)
        self.migrate()

    def schema_version(self) -> int:
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, name VARCHAR, applied_at TIMESTAMPTZ)"
        )
        row = self.con.execute("SELECT max(version) FROM schema_version").fetchone()
        return row[0] or 0

    def migrate(self, target: int = SCHEMA_VERSION) -> list[int]:
        """Apply the migrations above the file's version, up to `target`; returns those applied."""
        applied = []
        current = self.schema_version()
        for version, name, sql in MIGRATIONS:
            if current < version <= target:
                with self.transaction():
                    self.con.execute(sql)
                    self.con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [version, name, utc_now()])
                applied.append(version)
        return applied

    def transaction(self):
        return _Transaction(self.con)

    def close(self) -> None:
        release(self.con, self.path)

    def _insert(self, table: str, rows: list[dict], on_conflict: bool = False) -> None:
        """Insert dict rows through Arrow (one statement, whatever the count)."""
        if not rows:
            return
        cols = list(rows[0])
        incoming = pa.Table.from_pylist(rows)
        self.con.register("incoming_rows", incoming)
        try:
            self.con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM incoming_rows"
                             + (" ON CONFLICT DO NOTHING" if on_conflict else ""))
        finally:
            self.con.unregister("incoming_rows")

    def _arrow(self, sql: str, params: list) -> pa.Table:
        # a cursor of its own: the main connection may hold an unfetched result, which DuckDB refuses to mix
        with self.con.cursor() as cur:
            return cur.sql(sql, params=params).to_arrow_table()

    def _dicts(self, sql: str, params: list | None = None) -> list[dict]:
        """The rows of `sql` as dicts keyed by column name."""
        cur = self.con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


class _Transaction:
    """BEGIN on entry; COMMIT on a clean exit, ROLLBACK when the block raised."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def __enter__(self):
        self.con.execute("BEGIN TRANSACTION")
        return self.con

    def __exit__(self, exc_type, exc, tb):
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
