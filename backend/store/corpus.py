"""The corpus: projects, their files and chunks as ingest leaves them, and the repository's identifier index.

Ingest writes here a batch at a time (`apply_ingest_batch`, `mark_gone`) and rebuilds the identifiers
after each run; chunking and synthesis read the chunks back. `stats` is the project overview the CLI
and dashboard show; it also names the project's latest dataset version, so this store builds on the
dataset store.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from backend.store.core import utc_now
from backend.store.datasets import DatasetStore
from backend.store.schema import CHUNK_COLUMNS, FILE_COLUMNS


class CorpusStore(DatasetStore):
    """Projects, files, chunks and identifiers."""

    def upsert_project(self, name: str, root: str, git_commit: str | None) -> None:
        now = utc_now()
        with self.transaction():
            updated = self.con.execute(
                "UPDATE projects SET root = ?, git_commit = ?, updated_at = ? WHERE name = ? RETURNING name",
                [root, git_commit, now, name],
            ).fetchall()
            if not updated:
                self.con.execute("INSERT INTO projects VALUES (?, ?, ?, ?, ?)", [name, root, git_commit, now, now])

    def projects(self) -> list[dict]:
        return self._dicts(
            """SELECT p.name, p.root, p.git_commit, p.updated_at,
                      (SELECT count(*) FROM files f WHERE f.project = p.name AND f.status = 'ok') AS files,
                      (SELECT count(*) FROM chunks c WHERE c.project = p.name) AS chunks
               FROM projects p ORDER BY p.name"""
        )

    def file_index(self, project: str) -> dict[str, tuple[str | None, str | None, str]]:
        """path -> (sha256, chunker, status) of every file the project has seen."""
        rows = self.con.execute(
            "SELECT path, sha256, chunker, status FROM files WHERE project = ?", [project]).fetchall()
        return {path: (sha, chunker, status) for path, sha, chunker, status in rows}

    def apply_ingest_batch(self, project: str, files: pa.Table, chunks: pa.Table | None) -> int:
        """Replace the rows of the files in `files` (and all their chunks) with the new ones, atomically.

        Returns the number of chunks written.
        """
        now = utc_now()
        n_chunks = 0 if chunks is None else chunks.num_rows
        with self.transaction():
            self.con.register("incoming_files", files)
            self.con.execute(
                "DELETE FROM chunks WHERE project = ? AND path IN (SELECT path FROM incoming_files)", [project]
            )
            self.con.execute(
                "DELETE FROM files WHERE project = ? AND path IN (SELECT path FROM incoming_files)", [project]
            )
            cols = ", ".join(FILE_COLUMNS)
            self.con.execute(f"INSERT INTO files ({cols}, updated_at) SELECT {cols}, ? FROM incoming_files", [now])
            self.con.unregister("incoming_files")
            if n_chunks:
                self.con.register("incoming_chunks", chunks)
                cols = ", ".join(CHUNK_COLUMNS)
                self.con.execute(
                    f"INSERT INTO chunks ({cols}, created_at) SELECT {cols}, ? FROM incoming_chunks", [now]
                )
                self.con.unregister("incoming_chunks")
        return n_chunks

    def mark_gone(self, project: str, paths: list[str]) -> int:
        """Files deleted from the repository: status `gone`, and their chunks removed."""
        if not paths:
            return 0
        with self.transaction():
            self.con.execute("DELETE FROM chunks WHERE project = ? AND list_contains(?, path)", [project, paths])
            self.con.execute(
                "UPDATE files SET status = 'gone', n_chunks = 0, n_tokens = 0, updated_at = ? "
                "WHERE project = ? AND list_contains(?, path)",
                [utc_now(), project, paths],
            )
        return len(paths)

    def files(self, project: str, status: str | None = None) -> pa.Table:
        return self._arrow(
            "SELECT * FROM files WHERE project = $1 AND ($2 IS NULL OR status = $2) ORDER BY path",
            [project, status])

    def chunks(self, project: str, limit: int | None = None) -> pa.Table:
        """The chunks in (path, ord) order, each with its file's `git_commit` (the provenance samples record)."""
        return self._arrow(
            "SELECT c.*, f.git_commit FROM chunks c LEFT JOIN files f ON f.project = c.project AND f.path = c.path "
            "WHERE c.project = $1 ORDER BY c.path, c.ord LIMIT $2", [project, limit or 2**62])

    def stats(self, project: str) -> dict[str, Any]:
        """Files by kind, skipped files by reason, chunk and token totals and their distribution."""
        q = self.con.execute
        if not q("SELECT count(*) FROM projects WHERE name = ?", [project]).fetchone()[0]:
            raise KeyError(project)
        by_kind = dict(q(
            "SELECT kind, count(*) FROM files WHERE project = ? AND status = 'ok' GROUP BY kind ORDER BY kind",
            [project]).fetchall())
        skipped = dict(q(
            "SELECT skip_reason, count(*) FROM files WHERE project = ? AND status = 'skipped' "
            "GROUP BY skip_reason ORDER BY skip_reason", [project]).fetchall())
        gone = q("SELECT count(*) FROM files WHERE project = ? AND status = 'gone'", [project]).fetchone()[0]
        n, total, mn, mean, p50, p90, p99, mx = q(
            """SELECT count(*), coalesce(sum(token_count), 0), min(token_count), avg(token_count),
                      quantile_cont(token_count, 0.5), quantile_cont(token_count, 0.9),
                      quantile_cont(token_count, 0.99), max(token_count)
               FROM chunks WHERE project = ?""", [project]).fetchone()
        edges = [0, 32, 64, 128, 256, 512, 1024, 2048]
        hist = dict(q(
            f"""SELECT bucket, count(*) FROM (
                   SELECT CASE {' '.join(f"WHEN token_count < {hi} THEN '{lo}-{hi - 1}'" for lo, hi in zip(edges, edges[1:]))}
                          ELSE '{edges[-1]}+' END AS bucket FROM chunks WHERE project = ?)
               GROUP BY bucket""", [project]).fetchall())
        chunks_by_kind = dict(q(
            "SELECT kind, count(*) FROM chunks WHERE project = ? GROUP BY kind ORDER BY kind", [project]).fetchall())
        counters = [r[0] for r in q(
            "SELECT DISTINCT token_counter FROM chunks WHERE project = ? ORDER BY 1", [project]).fetchall()]
        current = self.current_dataset(project)
        samples = dict(q("SELECT split, count(*) FROM dataset_samples WHERE project = ? AND version = ? GROUP BY split",
                         [project, current]).fetchall()) if current else {}
        dead = q("SELECT count(*) FROM dead_letters d JOIN runs r USING (run_id) WHERE r.project = ? AND NOT d.resolved",
                 [project]).fetchone()[0]
        return {
            "project": project,
            "files": sum(by_kind.values()),
            "samples": samples,
            "dataset": current,
            "dead_letters": dead,
            "files_by_kind": by_kind,
            "skipped": skipped,
            "gone": gone,
            "chunks": n,
            "chunks_by_kind": chunks_by_kind,
            "tokens": int(total),
            "token_counter": counters,
            "tokens_per_chunk": {
                "min": mn, "mean": round(mean, 1) if mean is not None else None,
                "p50": p50, "p90": p90, "p99": p99, "max": mx,
                "histogram": {b: hist.get(b, 0) for b in
                              [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])] + [f"{edges[-1]}+"]},
            },
        }

    def replace_identifiers(self, project: str, rows: list[dict]) -> int:
        """The project's identifier index, replaced whole (`backend.repo_index.build_index` rows)."""
        with self.transaction():
            self.con.execute("DELETE FROM identifiers WHERE project = ?", [project])
            self._insert("identifiers", [dict(r, project=project) for r in rows])
        return len(rows)

    def identifiers(self, project: str, kind: str | None = None, search: str | None = None,
                    limit: int | None = None) -> list[dict]:
        return self._dicts(
            """SELECT name, kind, path, qualified FROM identifiers WHERE project = ? AND (? IS NULL OR kind = ?)
               AND (? IS NULL OR contains(lower(name), lower(?))) ORDER BY kind, name LIMIT ?""",
            [project, kind, kind, search, search, limit or 2**62])

    def identifier_counts(self, project: str) -> dict[str, int]:
        return dict(self.con.execute("SELECT kind, count(*) FROM identifiers WHERE project = ? GROUP BY kind "
                                     "ORDER BY count(*) DESC", [project]).fetchall())
