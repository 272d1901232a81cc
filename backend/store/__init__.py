"""The DuckDB store: versioned schema, migrations, and the verbs every stage reads and writes through.

DuckDB lets one process hold a file read-write and refuses every other process, even read-only.
So exactly one `Store` object owns `doctune.duckdb`; in a running system it lives inside the named
Ray store actor (`actors/store_actor.py`) and everyone else calls that actor. A second owner fails
at once with `StoreLockedError`, whose message names the holder (from the holder file written on open).

Writes arrive as Arrow tables and land in one transaction per batch: a crash loses at most the
batch in flight, never part of one.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from backend.store.lock import StoreLockedError, acquire, describe_holder, holder_path, ray_address_of_holder, release
from backend.store.schema import CHUNK_COLUMNS, FILE_COLUMNS, MIGRATIONS, SCHEMA_VERSION


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    """The one owner of a DuckDB file. Not thread-safe: its actor serializes calls."""

    def __init__(self, db_path: str | os.PathLike, *, role: str = "", ray_address: str | None = None):
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = acquire(self.path, role=role, ray_address=ray_address)
        self.migrate()

    # ---- schema ----------------------------------------------------------------------------
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
                    self.con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [version, name, _now()])
                applied.append(version)
        return applied

    def transaction(self):
        return _Transaction(self.con)

    def close(self) -> None:
        release(self.con, self.path)

    # ---- projects and files ----------------------------------------------------------------
    def upsert_project(self, name: str, root: str, git_commit: str | None) -> None:
        now = _now()
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
        now = _now()
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
                [_now(), project, paths],
            )
        return len(paths)

    # ---- runs ------------------------------------------------------------------------------
    def create_run(self, run_id: str, kind: str, project: str | None, config: dict) -> None:
        self.con.execute(
            "INSERT INTO runs (run_id, project, kind, status, config, created_at) VALUES (?, ?, ?, 'running', ?, ?)",
            [run_id, project, kind, json.dumps(config), _now()],
        )

    def finish_run(self, run_id: str, status: str, summary: dict, error: str | None = None) -> None:
        self.con.execute(
            "UPDATE runs SET status = ?, summary = ?, error = ?, finished_at = ? WHERE run_id = ?",
            [status, json.dumps(summary), error, _now(), run_id],
        )

    def runs(self, project: str | None = None, limit: int = 100) -> list[dict]:
        rows = self._dicts(
            "SELECT run_id, project, kind, status, summary, error, created_at, finished_at FROM runs "
            "WHERE ? IS NULL OR project = ? ORDER BY created_at DESC LIMIT ?",
            [project, project, limit],
        )
        for row in rows:
            row["summary"] = json.loads(row["summary"]) if row["summary"] else {}
        return rows

    # ---- synthesis -------------------------------------------------------------------------
    def find_run(self, project: str, kind: str, fingerprint: str, unfinished_only: bool = True) -> str | None:
        """The newest run of `kind` whose config has this fingerprint; by default only an unfinished one
        (running when its process died, failed, cancelled or stopped by the budget), to resume it."""
        row = self.con.execute(
            "SELECT run_id FROM runs WHERE project = ? AND kind = ? AND json_extract_string(config, '$.fingerprint') = ? "
            "AND (NOT ? OR status IN ('running', 'failed', 'cancelled', 'budget_stopped')) "
            "ORDER BY created_at DESC LIMIT 1", [project, kind, fingerprint, unfinished_only]).fetchone()
        return row[0] if row else None

    def set_run_status(self, run_id: str, status: str) -> None:
        self.con.execute("UPDATE runs SET status = ?, finished_at = NULL WHERE run_id = ?", [status, run_id])

    def run(self, run_id: str) -> dict | None:
        rows = self._dicts("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if not rows:
            return None
        row = rows[0]
        row["config"] = json.loads(row["config"]) if row["config"] else {}
        row["summary"] = json.loads(row["summary"]) if row["summary"] else {}
        return row

    def finished_units(self, run_id: str) -> dict[str, str]:
        """cache_key -> 'ok' (its samples are stored) or 'dead' (an unresolved dead letter)."""
        out = {k: "dead" for (k,) in self.con.execute(
            "SELECT cache_key FROM dead_letters WHERE run_id = ? AND NOT resolved", [run_id]).fetchall()}
        out.update({k: "ok" for (k,) in self.con.execute(
            "SELECT DISTINCT cache_key FROM samples WHERE run_id = ?", [run_id]).fetchall()})
        return out

    def cached_responses(self, keys: list[str]) -> dict[str, dict]:
        if not keys:
            return {}
        rows = self._dicts("SELECT cache_key, content, tokens_in, tokens_out, cost_usd FROM responses "
                           "WHERE list_contains(?, cache_key)", [keys])
        return {r["cache_key"]: r for r in rows}

    def record_synth_batch(self, run_id: str, responses: list[dict], requests: list[dict], samples: list[dict],
                           dead: list[dict], resolved: list[str]) -> None:
        """One transaction: cached responses, the request log, samples, new and resolved dead letters."""
        now = _now()
        with self.transaction():
            for r in responses:
                self.con.execute(
                    "INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [r["cache_key"], r["model"], r["content"], r["tokens_in"], r["tokens_out"], r["cost_usd"], now])
            if requests:
                self._insert("api_requests", [dict(r, run_id=run_id, ts=now) for r in requests])
            if samples:
                self._insert("samples", [dict(s, messages=json.dumps(s["messages"]) if s.get("messages") else None,
                                              created_at=now) for s in samples], on_conflict=True)
            if resolved:
                self.con.execute("UPDATE dead_letters SET resolved = true WHERE run_id = ? AND "
                                 "list_contains(?, cache_key)", [run_id, resolved])
            if dead:
                self._insert("dead_letters", [dict(d, run_id=run_id, resolved=False, created_at=now) for d in dead])

    def run_usage(self, run_id: str) -> dict:
        row = self.con.execute(
            """SELECT count(*), count(*) FILTER (WHERE status LIKE 'ok%'), count(*) FILTER (WHERE status = 'http_429'),
                      coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0), coalesce(sum(cost_usd), 0)
               FROM api_requests WHERE run_id = ?""", [run_id]).fetchone()
        samples = self.con.execute("SELECT count(*) FROM samples WHERE run_id = ?", [run_id]).fetchone()[0]
        dead = self.con.execute("SELECT count(*) FROM dead_letters WHERE run_id = ? AND NOT resolved",
                                [run_id]).fetchone()[0]
        return {"requests": row[0], "ok": row[1], "http_429": row[2], "tokens_in": int(row[3]),
                "tokens_out": int(row[4]), "cost_usd": round(float(row[5]), 6), "samples": samples,
                "dead_letters": dead}

    def requests(self, run_id: str) -> list[dict]:
        """The run's request log, oldest first."""
        return self._dicts("SELECT * FROM api_requests WHERE run_id = ? ORDER BY ts", [run_id])

    def dead_letters(self, project: str | None = None, run_id: str | None = None,
                     unresolved_only: bool = True) -> list[dict]:
        return self._dicts(
            """SELECT d.* FROM dead_letters d JOIN runs r USING (run_id)
               WHERE (? IS NULL OR r.project = ?) AND (? IS NULL OR d.run_id = ?) AND (NOT ? OR NOT d.resolved)
               ORDER BY d.created_at""", [project, project, run_id, run_id, unresolved_only])

    def samples(self, run_ids: list[str]) -> list[dict]:
        rows = self._dicts("SELECT * EXCLUDE (created_at) FROM samples WHERE list_contains(?, run_id) "
                           "ORDER BY sample_id", [run_ids])
        for r in rows:
            r["messages"] = json.loads(r["messages"]) if r["messages"] else None
        return rows

    def record_judgements(self, rows: list[dict]) -> None:
        if rows:
            self._insert("judgements", [dict(r, created_at=_now()) for r in rows])

    def judgements(self, sample_ids: list[str], model: str) -> dict[str, float]:
        rows = self.con.execute("SELECT sample_id, score FROM judgements WHERE model = ? AND "
                                "list_contains(?, sample_id)", [model, sample_ids]).fetchall()
        return dict(rows)

    # ---- training metrics and events --------------------------------------------------------
    def record_metrics(self, run_id: str, rows: list[tuple[int, str, float]]) -> None:
        """(step, name, value) rows of one run, in one insert."""
        if rows:
            now = _now()
            self._insert("metrics", [{"run_id": run_id, "step": step, "name": name, "value": value, "ts": now}
                                     for step, name, value in rows])

    def rewind_metrics(self, run_id: str, step: int, history: list[tuple[int, str, float]]) -> int:
        """A run resuming from its checkpoint at `step`: the metrics logged after it belong to the lost
        attempt and go; those the checkpoint recorded but the store never received are added. Returns the
        rows added."""
        with self.transaction():
            self.con.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", [run_id, step])
            have = set(self.con.execute("SELECT step, name FROM metrics WHERE run_id = ?", [run_id]).fetchall())
            missing = [r for r in history if r[0] <= step and (r[0], r[1]) not in have]
            self.record_metrics(run_id, missing)
        return len(missing)

    def record_event(self, run_id: str, kind: str, detail: dict | None = None) -> None:
        self.con.execute("INSERT INTO run_events VALUES (?, ?, ?, ?)",
                         [run_id, kind, json.dumps(detail or {}, default=str), _now()])

    def run_events(self, run_id: str) -> list[dict]:
        rows = self._dicts("SELECT kind, detail, ts FROM run_events WHERE run_id = ? ORDER BY ts", [run_id])
        for r in rows:
            r["detail"] = json.loads(r["detail"]) if r["detail"] else {}
        return rows

    def metrics(self, run_id: str, names: list[str] | None = None) -> pa.Table:
        """step, name, value, ts of a run (all names, or those given), in step order."""
        return self._arrow("SELECT step, name, value, ts FROM metrics WHERE run_id = $1 AND "
                           "($2::VARCHAR[] IS NULL OR list_contains($2::VARCHAR[], name)) ORDER BY step, name",
                           [run_id, names])

    def update_run(self, run_id: str, status: str | None = None, summary: dict | None = None) -> None:
        """Live status/summary of a run that is still going (finish_run ends it)."""
        if status is not None:
            self.con.execute("UPDATE runs SET status = ? WHERE run_id = ?", [status, run_id])
        if summary is not None:
            self.con.execute("UPDATE runs SET summary = ? WHERE run_id = ?", [json.dumps(summary, default=str), run_id])

    # ---- evaluation --------------------------------------------------------------------------
    def record_eval_results(self, rows: list[dict]) -> None:
        if rows:
            now = _now()
            self._insert("eval_results", [
                {k: (json.dumps(v, default=str) if k in {"prompt", "base_scores", "tuned_scores", "judge_detail",
                                                          "details"}
                     and v is not None else v) for k, v in r.items()} | {"created_at": now} for r in rows])

    def set_eval_judgements(self, run_id: str, verdicts: dict[tuple[str, str], tuple[str, dict]]) -> None:
        """(eval_set, sample_id) -> (win | tie | loss, detail) for an evaluation run."""
        with self.transaction():
            for (eval_set, sample_id), (verdict, detail) in verdicts.items():
                self.con.execute("UPDATE eval_results SET judge = ?, judge_detail = ? WHERE run_id = ? AND "
                                 "eval_set = ? AND sample_id = ?",
                                 [verdict, json.dumps(detail, default=str), run_id, eval_set, sample_id])

    def eval_results(self, run_id: str, eval_set: str | None = None) -> list[dict]:
        rows = self._dicts("SELECT * EXCLUDE (created_at) FROM eval_results WHERE run_id = ? AND "
                           "(? IS NULL OR eval_set = ?) ORDER BY eval_set, sample_id", [run_id, eval_set, eval_set])
        for r in rows:
            for k in ("prompt", "base_scores", "tuned_scores", "judge_detail", "details"):
                r[k] = json.loads(r[k]) if r[k] else None
        return rows

    # ---- dataset versions ------------------------------------------------------------------
    def create_dataset(self, project: str, rows: list[dict], *, source_runs: list[str], config: dict,
                       stats: dict, parent: str | None = None, note: str | None = None) -> str:
        """A new immutable version `v<N>` holding copies of `rows` (each with its `split`)."""
        with self.transaction():
            n = self.con.execute("SELECT count(*) FROM datasets WHERE project = ?", [project]).fetchone()[0]
            version = f"v{n + 1}"
            self.con.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [project, version, parent, source_runs, json.dumps(config), json.dumps(stats), note,
                              _now()])
            cols = [c for c, *_ in self.con.execute("DESCRIBE dataset_samples").fetchall()]
            self._insert("dataset_samples", [
                {c: (json.dumps(r.get(c)) if c == "messages" and r.get(c) else r.get(c))
                 for c in cols} | {"project": project, "version": version} for r in rows])
        return version

    def datasets(self, project: str) -> list[dict]:
        rows = self._dicts(
            """SELECT d.version, d.parent, d.source_runs, d.note, d.created_at, d.stats,
                      (SELECT count(*) FROM dataset_samples s WHERE s.project = d.project AND s.version = d.version)
                      AS samples
               FROM datasets d WHERE d.project = ? ORDER BY d.created_at""", [project])
        splits = self.con.execute(
            "SELECT version, split, count(*) FROM dataset_samples WHERE project = ? GROUP BY ALL", [project]).fetchall()
        for r in rows:
            r["stats"] = json.loads(r["stats"]) if r["stats"] else {}
            r["splits"] = {sp: n for v, sp, n in splits if v == r["version"]}
        return rows

    def latest_dataset(self, project: str) -> str | None:
        row = self.con.execute("SELECT version FROM datasets WHERE project = ? ORDER BY created_at DESC LIMIT 1",
                               [project]).fetchone()
        return row[0] if row else None

    def dataset_rows(self, project: str, version: str) -> list[dict]:
        rows = self._dicts("SELECT * EXCLUDE (project, version) FROM dataset_samples WHERE project = ? AND "
                           "version = ? ORDER BY split, sample_id", [project, version])
        for r in rows:
            r["messages"] = json.loads(r["messages"]) if r["messages"] else None
        return rows

    # ---- the repository's identifiers ----------------------------------------------------------
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

    # ---- reads -----------------------------------------------------------------------------
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
        latest = self.latest_dataset(project)
        samples = dict(q("SELECT split, count(*) FROM dataset_samples WHERE project = ? AND version = ? GROUP BY split",
                         [project, latest]).fetchall()) if latest else {}
        dead = q("SELECT count(*) FROM dead_letters d JOIN runs r USING (run_id) WHERE r.project = ? AND NOT d.resolved",
                 [project]).fetchone()[0]
        return {
            "project": project,
            "files": sum(by_kind.values()),
            "samples": samples,
            "dataset": latest,
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

    # ---- dashboard reads: aggregated here, so a page receives kilobytes whatever the store's size ----
    def dataset_profile(self, project: str, version: str) -> dict[str, Any]:
        """What the corpus & dataset page draws for one version: splits, task and language mix,
        judge-score histogram, execution-check outcomes, coverage of source files, curation stats."""
        q = self.con.execute
        base = "FROM dataset_samples WHERE project = ? AND version = ?"
        args = [project, version]
        row = q(f"SELECT count(*), count(judge_score), count(DISTINCT path) {base}", args).fetchone()
        if not q("SELECT count(*) FROM datasets WHERE project = ? AND version = ?", args).fetchone()[0]:
            raise KeyError(f"{project}/{version}")
        n, judged, covered = row
        meta = self._dicts("SELECT parent, note, stats, created_at FROM datasets WHERE project = ? AND version = ?",
                           args)[0]
        files_with_chunks = q("SELECT count(DISTINCT path) FROM chunks WHERE project = ?", [project]).fetchone()[0]
        per_file = q(f"SELECT c, count(*) FROM (SELECT path, count(*) AS c {base} GROUP BY path) GROUP BY c "
                     "ORDER BY c", args).fetchall()
        return {
            "project": project, "version": version, "samples": n, "parent": meta["parent"], "note": meta["note"],
            "created_at": meta["created_at"], "curation": json.loads(meta["stats"]) if meta["stats"] else {},
            "splits": dict(q(f"SELECT split, count(*) {base} GROUP BY split ORDER BY split", args).fetchall()),
            "tasks": dict(q(f"SELECT task, count(*) {base} GROUP BY task ORDER BY task", args).fetchall()),
            "task_by_split": [dict(zip(("split", "task", "n"), r)) for r in q(
                f"SELECT split, task, count(*) {base} GROUP BY ALL ORDER BY ALL", args).fetchall()],
            "languages": dict(q(f"SELECT language, count(*) {base} GROUP BY language ORDER BY 2 DESC",
                                args).fetchall()),
            "exec_status": dict(q(f"SELECT coalesce(exec_status, 'not checked'), count(*) {base} GROUP BY 1 "
                                  "ORDER BY 1", args).fetchall()),
            "judged": judged,
            # judge scores are 1-10: one bar per half point
            "judge_histogram": dict(q(f"SELECT floor(judge_score * 2) / 2 AS s, count(*) {base} "
                                      "AND judge_score IS NOT NULL GROUP BY s ORDER BY s", args).fetchall()),
            "coverage": {
                "files_with_samples": covered, "files_with_chunks": files_with_chunks,
                "samples_per_file": dict(per_file),
                "top_files": [dict(zip(("path", "samples"), r)) for r in q(
                    f"SELECT path, count(*) {base} GROUP BY path ORDER BY 2 DESC, 1 LIMIT 25", args).fetchall()],
            },
        }

    def browse_samples(self, project: str, version: str, *, search: str | None = None, task: str | None = None,
                       split: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """One page of a version's samples, filtered; `total` counts every match."""
        where = ["project = ?", "version = ?"]
        args: list = [project, version]
        if search:  # a plain substring: _ and % match themselves
            where.append("(instruction ILIKE ? ESCAPE '\\' OR input ILIKE ? ESCAPE '\\' OR output ILIKE ? ESCAPE '\\' "
                         "OR path ILIKE ? ESCAPE '\\')")
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pattern] * 4
        if task:
            where.append("task = ?")
            args.append(task)
        if split:
            where.append("split = ?")
            args.append(split)
        cond = " AND ".join(where)
        total = self.con.execute(f"SELECT count(*) FROM dataset_samples WHERE {cond}", args).fetchone()[0]
        rows = self._dicts(
            f"SELECT sample_id, split, task, language, path, start_line, end_line, judge_score, exec_status, "
            f"instruction, input, output, messages FROM dataset_samples WHERE {cond} "
            f"ORDER BY split, sample_id LIMIT ? OFFSET ?", args + [limit, offset])
        for r in rows:
            r["messages"] = json.loads(r["messages"]) if r["messages"] else None
        return {"total": total, "rows": rows}

    def derive_dataset(self, project: str, version: str, *, edits: dict[str, dict] | None = None,
                       rejects: list[str] | None = None, note: str | None = None) -> str:
        """A new version: `version`'s rows without `rejects`, with `edits` (sample_id -> {field: text})
        applied to the copies. The old version is never changed.

        Raises:
            KeyError: no such version, or an edited/rejected sample that is not in it.
            ValueError: an edit of a field other than instruction, input or output, or nothing to change.
        """
        edits, rejects = edits or {}, list(rejects or [])
        if not edits and not rejects:
            raise ValueError("nothing to change: edit or reject at least one sample")
        bad = sorted({f for e in edits.values() for f in e} - {"instruction", "input", "output"})
        if bad:
            raise ValueError(f"only instruction, input and output can be edited, not {bad}")
        parent = self._dicts("SELECT source_runs, config, stats FROM datasets WHERE project = ? AND version = ?",
                             [project, version])
        if not parent:
            raise KeyError(f"dataset {project}/{version} does not exist")
        ids = sorted(set(edits) | set(rejects))
        found = {r[0] for r in self.con.execute(
            "SELECT sample_id FROM dataset_samples WHERE project = ? AND version = ? AND list_contains(?, sample_id)",
            [project, version, ids]).fetchall()}
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"samples not in {project}/{version}: {missing[:5]}")
        stats = (json.loads(parent[0]["stats"]) if parent[0]["stats"] else {}) | {
            "edited": len(set(edits) - set(rejects)), "rejected": len(set(rejects)), "derived_from": version}
        with self.transaction():
            n = self.con.execute("SELECT count(*) FROM datasets WHERE project = ?", [project]).fetchone()[0]
            new = f"v{n + 1}"
            self.con.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [project, new, version, parent[0]["source_runs"], parent[0]["config"],
                              json.dumps(stats), note or f"reviewed copy of {version}", _now()])
            self.con.execute(
                "INSERT INTO dataset_samples SELECT * REPLACE (? AS version) FROM dataset_samples "
                "WHERE project = ? AND version = ? AND NOT list_contains(?, sample_id)",
                [new, project, version, rejects])
            for sample_id, fields in edits.items():
                if sample_id in rejects or not fields:
                    continue
                sets = ", ".join(f"{f} = ?" for f in fields)
                self.con.execute(f"UPDATE dataset_samples SET {sets} WHERE project = ? AND version = ? AND "
                                 "sample_id = ?", [*fields.values(), project, new, sample_id])
        return new

    def synth_progress(self, run_id: str) -> dict[str, Any]:
        """A synthesis run's live figures: usage so far and requests in the last minute."""
        run = self.run(run_id)
        if run is None:
            raise KeyError(run_id)
        usage = self.run_usage(run_id)
        rpm = self.con.execute("SELECT count(*) FROM api_requests WHERE run_id = ? AND ts > ? - INTERVAL 60 SECOND",
                               [run_id, _now()]).fetchone()[0]
        done = self.con.execute("SELECT count(DISTINCT cache_key) FROM samples WHERE run_id = ?",
                                [run_id]).fetchone()[0]
        return usage | {"run_id": run_id, "status": run["status"], "requests_last_minute": rpm,
                        "units_done": done + usage["dead_letters"], "units": run["summary"].get("units"),
                        "dataset": run["summary"].get("dataset"), "created_at": run["created_at"],
                        "finished_at": run["finished_at"], "error": run["error"]}

    def metric_series(self, run_ids: list[str], names: list[str], *, x: str = "step",
                      max_points: int = 400) -> pa.Table:
        """run_id, name, x, value (and the bucket's min/max): each series averaged into at most `max_points`
        buckets of `x`, so a chart gets the same few hundred points for 100 steps or 100,000.

        Args:
            x: `step`, or another logged metric to plot against (`epoch`, `num_tokens`), matched to each point
                as its latest value at or before the point's step.
        """
        xs = "" if x == "step" else (
            "ASOF JOIN (SELECT run_id, step, value AS x FROM metrics WHERE list_contains($1, run_id) AND name = $4) xs "
            "ON m.run_id = xs.run_id AND m.step >= xs.step")
        x_col = "m.step" if x == "step" else "xs.x"
        return self._arrow(f"""
            WITH m AS (SELECT run_id, step, name, value FROM metrics
                       WHERE list_contains($1, run_id) AND list_contains($2, name) AND isfinite(value)),
            p AS (SELECT m.run_id, m.name, {x_col} AS x, m.value FROM m {xs}),
            r AS (SELECT run_id, name, min(x) AS lo, max(x) AS hi FROM p GROUP BY ALL)
            SELECT run_id, name, avg(x) AS x, avg(value) AS value, min(value) AS min, max(value) AS max
            FROM p JOIN r USING (run_id, name)
            GROUP BY run_id, name,
                     CASE WHEN hi = lo THEN 0 ELSE least(floor((x - lo) / (hi - lo) * $3), $3 - 1) END
            ORDER BY run_id, name, x""", [run_ids, names, max_points] + ([] if x == "step" else [x]))

    def metric_names(self, run_ids: list[str]) -> list[str]:
        return [r[0] for r in self.con.execute(
            "SELECT DISTINCT name FROM metrics WHERE list_contains(?, run_id) ORDER BY 1", [run_ids]).fetchall()]

    def run_table(self, run_ids: list[str]) -> list[dict]:
        """Training runs side by side: config, summary, and aggregates of their metrics."""
        rows = self._dicts("SELECT run_id, project, kind, status, config, summary, created_at, finished_at FROM runs "
                           "WHERE list_contains(?, run_id) ORDER BY created_at", [run_ids])
        aggs = {r[0]: r[1:] for r in self.con.execute(
            """SELECT run_id, min(value) FILTER (WHERE name = 'eval_loss'), min(value) FILTER (WHERE name = 'loss'),
                      avg(value) FILTER (WHERE name = 'tokens_per_second'),
                      max(value) FILTER (WHERE name = 'gpu_mem_peak_mb'), max(value) FILTER (WHERE name = 'rss_mb'),
                      max(step)
               FROM metrics WHERE list_contains(?, run_id) GROUP BY run_id""", [run_ids]).fetchall()}
        evals = self._dicts("SELECT run_id, json_extract_string(config, '$.adapter_run') AS adapter_run, summary "
                            "FROM runs WHERE kind = 'eval' AND status = 'completed' AND "
                            "list_contains(?, json_extract_string(config, '$.adapter_run')) ORDER BY created_at",
                            [run_ids])
        latest_eval = {e["adapter_run"]: json.loads(e["summary"]) if e["summary"] else {} for e in evals}
        for r in rows:
            r["config"] = json.loads(r["config"]) if r["config"] else {}
            r["summary"] = json.loads(r["summary"]) if r["summary"] else {}
            best_eval, best_loss, tps, gpu, rss, last = aggs.get(r["run_id"], (None,) * 6)
            r["best_eval_loss"], r["best_train_loss"] = best_eval, best_loss
            r["tokens_per_second"] = tps if tps is not None else r["summary"].get("tokens_per_second")
            r["peak_gpu_mb"], r["peak_rss_mb"], r["last_step"] = gpu, rss, last
            r["eval"] = latest_eval.get(r["run_id"])
        return rows

    def eval_view(self, run_id: str, eval_set: str, *, task: str | None = None, flip: str | None = None,
                  metric: str = "rouge_l", tolerance: float = 0.05, limit: int = 50, offset: int = 0) -> dict:
        """One page of an evaluation's side-by-side rows; `flip` = improved | regressed keeps the samples whose
        `metric` moved by more than `tolerance` that way (higher is better, as for rouge_l); `flip` =
        hallucination_fixed keeps those where the base invented a repository name and the tuned model was right
        (stated the probe's fact, or, without a fact, used the reference's names and invented none)."""
        where = ["run_id = ?", "eval_set = ?"]
        args: list = [run_id, eval_set]
        if task:
            where.append("task = ?")
            args.append(task)
        delta = (f"(TRY_CAST(json_extract_string(tuned_scores, '$.{metric}') AS DOUBLE) - "
                 f"TRY_CAST(json_extract_string(base_scores, '$.{metric}') AS DOUBLE))")
        if flip == "improved":
            where.append(f"{delta} > ?")
            args.append(tolerance)
        elif flip == "regressed":
            where.append(f"{delta} < ?")
            args.append(-tolerance)
        elif flip == "hallucination_fixed":
            score = lambda side, m: f"TRY_CAST(json_extract_string({side}_scores, '$.{m}') AS DOUBLE)"
            where.append(f"""{score('base', 'api_hallucination')} > 0 AND (
                {score('tuned', 'fact_accuracy')} = 1 OR (fact IS NULL AND {score('tuned', 'api_recall')} > 0
                AND coalesce({score('tuned', 'api_hallucination')}, 0) = 0))""")
        elif flip is not None:
            raise ValueError(f"flip={flip!r}: use 'improved', 'regressed', 'hallucination_fixed' or None")
        cond = " AND ".join(where)
        total = self.con.execute(f"SELECT count(*) FROM eval_results WHERE {cond}", args).fetchone()[0]
        rows = self._dicts(f"SELECT * EXCLUDE (created_at) FROM eval_results WHERE {cond} ORDER BY sample_id "
                           "LIMIT ? OFFSET ?", args + [limit, offset])
        for r in rows:
            for k in ("prompt", "base_scores", "tuned_scores", "judge_detail", "details"):
                r[k] = json.loads(r[k]) if r[k] else None
        judge = dict(self.con.execute("SELECT coalesce(judge, 'not judged'), count(*) FROM eval_results WHERE "
                                      "run_id = ? AND eval_set = ? GROUP BY 1", [run_id, eval_set]).fetchall())
        tasks = [r[0] for r in self.con.execute("SELECT DISTINCT task FROM eval_results WHERE run_id = ? AND "
                                                "eval_set = ? ORDER BY 1", [run_id, eval_set]).fetchall()]
        sets = [r[0] for r in self.con.execute("SELECT DISTINCT eval_set FROM eval_results WHERE run_id = ? "
                                               "ORDER BY 1", [run_id]).fetchall()]
        return {"total": total, "rows": rows, "judge": judge, "tasks": tasks, "eval_sets": sets}

    def files(self, project: str, status: str | None = None) -> pa.Table:
        return self._arrow(
            "SELECT * FROM files WHERE project = $1 AND ($2 IS NULL OR status = $2) ORDER BY path",
            [project, status])

    def chunks(self, project: str, limit: int | None = None) -> pa.Table:
        return self._arrow(
            "SELECT * FROM chunks WHERE project = $1 ORDER BY path, ord LIMIT $2", [project, limit or 2**62])

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
        cur = self.con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


class _Transaction:
    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def __enter__(self):
        self.con.execute("BEGIN TRANSACTION")
        return self.con

    def __exit__(self, exc_type, exc, tb):
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")
        return False

